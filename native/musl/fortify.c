/*
 * glibc's _FORTIFY_SOURCE entry points, for the launcher's musl build.
 *
 * cgfence-runc is linked statically against musl rather than glibc: a static glibc binary
 * runs its CPU-feature and cache probes at start-up (dozens of CPUID instructions), and in
 * a virtual machine each CPUID is a VM exit; measured here, glibc's start-up costs ~0.6 ms
 * per exec against ~0.05 ms for musl's, and the launcher is exec'd for every runc call the
 * shim makes (docs/exec-performance.md, "The launcher's own exec").
 *
 * The JSON parser stays the system's json-c (Debian's libjson-c.a). That archive was compiled
 * with _FORTIFY_SOURCE against glibc, so it calls the checked variants below, which musl
 * does not have. Each keeps glibc's check (a size that does not fit aborts, as glibc's
 * __chk_fail does), then does the plain call. A newer libjson-c.a that needs another glibc
 * symbol fails the link by name (scripts/build-launcher.sh), it is never silently replaced.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static _Noreturn void chk_fail(void)
{
	static const char msg[] = "*** buffer overflow detected ***: terminated\n";
	(void)!write(2, msg, sizeof(msg) - 1);
	abort();
}

int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *fmt, va_list ap)
{
	(void)flag;
	if (slen < maxlen)
		chk_fail();
	return vsnprintf(s, maxlen, fmt, ap);
}

int __snprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = __vsnprintf_chk(s, maxlen, flag, slen, fmt, ap);
	va_end(ap);
	return r;
}

int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	return vfprintf(f, fmt, ap);
}

int __fprintf_chk(FILE *f, int flag, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vfprintf(f, fmt, ap);
	(void)flag;
	va_end(ap);
	return r;
}

int __vasprintf_chk(char **out, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	return vasprintf(out, fmt, ap);
}

char *__strcat_chk(char *dest, const char *src, size_t destlen)
{
	if (strlen(dest) + strlen(src) + 1 > destlen)
		chk_fail();
	return strcat(dest, src);
}

void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	vsyslog(pri, fmt, ap);
}
