#pragma once
#include <napi.h>

namespace cgfence {
void InitSeccomp(Napi::Env env, Napi::Object exports);
}
