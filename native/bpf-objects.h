// The BPF objects compiled from bpf/*.bpf.c, embedded in the addon as ELF bytes through the
// skeleton headers that scripts/build-bpf.sh generates.
#pragma once
#include <cstddef>
#include <string>

namespace cgfence {

// Returns nullptr for an unknown name.
const void *EmbeddedObject(const std::string &name, size_t *size);
const char *EmbeddedObjectNames();

}  // namespace cgfence
