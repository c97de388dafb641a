// renameExchange(from, to): swaps two paths atomically (renameat2 RENAME_EXCHANGE). The daemon's
// state file is replaced this way rather than by a rename over it: on ext4 a rename that
// replaces a file starts the new data's writeback there and then (auto_da_alloc), ~0.1 ms of
// the daemon's thread and a disk write per save; an exchange, then an unlink of the old
// data, costs ~9 µs and often no write at all. Node has no renameat2.
#pragma once
#include <napi.h>

namespace cgfence {

void InitRenameExchange(Napi::Env env, Napi::Object exports);

}  // namespace cgfence
