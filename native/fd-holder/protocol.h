/*
 * The fd-holder protocol, shared by cgfence-fd-holder and the addon's client.
 *
 * The holder has two sockets. AGENT is runc's seccomp agent socket (config.json's
 * linux.seccomp.listenerPath): runc connects, sends the container's state (OCI
 * ContainerProcessState JSON, with listenerMetadata = the container key) and the notify fd
 * as SCM_RIGHTS, and goes on. CONTROL (unix SOCK_SEQPACKET) is the daemon's: every message
 * is one packet of text (no NUL); an fd travels with its message as SCM_RIGHTS.
 *
 *   daemon -> holder   "GET"                              take over: send everything held,
 *   holder -> daemon   "FD <serial> <pid> <key>"   + fd   one per fd, then
 *                      "END <count> <version>"     + fd   the in-flight table (below), and
 *                                                         from now on, as runc delivers:
 *                      "NEW <serial> <pid> <key>"  + fd
 *                      "DENIED <serial> <arch> <nr> <count>"  after an FD: seccomp denials
 *                                                         the holder answered EPERM while no
 *                                                         daemon was connected, per kind
 *                                                         (audit arch, syscall nr; nr -1:
 *                                                         kinds beyond FDH_MAX_KINDS); the
 *                                                         holder forgets them once sent
 *   daemon -> holder   "DROP <serial>"                    close it (its container is gone)
 *                      "PUT <serial> <pid> <key>"  + fd   keep this one (re-seeding a new holder)
 *                      "QUIT"                             close everything and exit
 *
 * <version> (FDH_VERSION) says what the holder does while no daemon is connected. A holder of
 * before it sends "END <count>" alone (read as version 0): it answers every notification
 * CONTINUE, which would run a syscall cgfence routes to it to be denied, so a daemon that
 * finds one retires it (QUIT, after GET has given it every fd), starts a new holder and
 * re-seeds it (PUT). Every daemon's client so far reads END by its first three letters, so
 * an older daemon works with a newer holder.
 *
 * <serial> names one fd for both sides, <pid> is the process runc reported with it, <key>
 * the container ("namespace/id"), last because it is the only free-form field.
 *
 * The in-flight table: a notification the daemon has received (RECV) but not answered when
 * it dies would wait forever, since the holder's copy keeps the fd open and the kernel has
 * no way to list received notifications. So the daemon writes, after every RECV, the fd's
 * serial and the notification id into slot serial % FDH_SLOTS of a shared memfd the holder
 * made. When the daemon is gone, the holder answers CONTINUE to every id from the slot's
 * up to FDH_PROBE further that SECCOMP_IOCTL_NOTIF_ID_VALID says is received and waiting
 * (a filter numbers its notifications consecutively, so one received after the last write
 * is among them).
 */
#pragma once

#include <stdint.h>

#define FDH_MAX_MSG   2048
#define FDH_MAX_KEY   1024
#define FDH_SLOTS     4096
#define FDH_PROBE     256
#define FDH_MAX_KINDS 16

/* 1: while no daemon is connected, answers every notification that is not an exec EPERM
 * (fail closed), in flight too (FDH_SLOT_DENY), and counts them (DENIED). */
#define FDH_VERSION 1

/* Set in a slot's serial when the notification is a seccomp denial (any syscall but
 * execve/execveat: seccomp-profile.ts routes only those and cgfence's denied names to the
 * holder's socket): the holder answers it EPERM, never CONTINUE. */
#define FDH_SLOT_DENY (1ULL << 63)

struct fdh_slot {
	uint64_t serial; /* written first: a torn write leaves an older id of the same fd */
	uint64_t id;
};
