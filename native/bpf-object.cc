#include "bpf-object.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <mutex>
#include <vector>

#include "bpf-link.h"
#include "bpf-objects.h"
#include "errors.h"

namespace cgfence {

// libbpf reports verifier logs and load failures through its print callback. We keep what
// it says during a load and attach it to the error, so a failed load explains itself.
static std::mutex g_log_mu;
static std::string *g_log_capture = nullptr;

static int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (!g_log_capture) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n > 0 && g_log_capture->size() < (1 << 20)) g_log_capture->append(buf);
  return 0;
}

// Sets `const volatile` globals before load: settings baked into the program are read-only
// to user space afterwards, which matters when the setting says whom to trust. Variables are
// found by name in the object's BTF; each value must be exactly the variable's size.
static std::string SetRodata(struct bpf_object *obj, Napi::Object values) {
  struct bpf_map *rodata = nullptr, *map;
  bpf_object__for_each_map(map, obj) {
    const char *n = bpf_map__name(map);
    size_t len = strlen(n);
    if (bpf_map__is_internal(map) && len >= 7 && !strcmp(n + len - 7, ".rodata")) rodata = map;
  }
  struct btf *btf = bpf_object__btf(obj);
  int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -1;
  if (!rodata || sec_id < 0) return "the object has no .rodata (const volatile) variables";
  size_t size = 0;
  const void *cur = bpf_map__initial_value(rodata, &size);
  std::vector<uint8_t> data(static_cast<const uint8_t *>(cur), static_cast<const uint8_t *>(cur) + size);
  const struct btf_type *sec = btf__type_by_id(btf, sec_id);
  const struct btf_var_secinfo *vars = btf_var_secinfos(sec);
  Napi::Array names = values.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string want = names.Get(i).As<Napi::String>().Utf8Value();
    Napi::Value v = values.Get(want);
    if (!v.IsBuffer()) return "rodata '" + want + "' must be a Buffer";
    auto b = v.As<Napi::Buffer<uint8_t>>();
    bool found = false;
    for (int j = 0; j < btf_vlen(sec) && !found; j++) {
      const struct btf_type *var = btf__type_by_id(btf, vars[j].type);
      if (want != btf__name_by_offset(btf, var->name_off)) continue;
      if (b.Length() != vars[j].size)
        return "rodata '" + want + "' is " + std::to_string(vars[j].size) + " bytes, got " + std::to_string(b.Length());
      if (vars[j].offset + vars[j].size > data.size()) return "rodata '" + want + "' lies outside .rodata";
      memcpy(data.data() + vars[j].offset, b.Data(), b.Length());
      found = true;
    }
    if (!found) return "the object has no const volatile variable '" + want + "'";
  }
  int err = bpf_map__set_initial_value(rodata, data.data(), data.size());
  return err ? std::string("bpf_map__set_initial_value: ") + strerror(-err) : "";
}

Napi::Function BpfObject::Init(Napi::Env env) {
  libbpf_set_print(LibbpfPrint);
  return DefineClass(env, "BpfObject",
                     {
                         InstanceMethod("mapUpdate", &BpfObject::MapUpdate),
                         InstanceMethod("mapLookup", &BpfObject::MapLookup),
                         InstanceMethod("mapDelete", &BpfObject::MapDelete),
                         InstanceMethod("mapKeys", &BpfObject::MapKeys),
                         InstanceMethod("mapInfo", &BpfObject::MapInfo),
                         InstanceMethod("programInfo", &BpfObject::ProgramInfo),
                         InstanceMethod("attachTracing", &BpfObject::AttachTracing),
                         InstanceMethod("attachCgroup", &BpfObject::AttachCgroup),
                         InstanceMethod("close", &BpfObject::Close),
                     });
}

// new BpfObject(name, { pinDir?: string, programs?: string[] }). Loading is synchronous: it
// happens once per daemon start and takes milliseconds, and a failure must stop start-up
// anyway. With `programs`, only the named programs are loaded: an object can carry
// alternative hooks (exec fence by cgroup v2 or by pid namespace) without paying for both.
BpfObject::BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw Napi::TypeError::New(env, "BpfObject(name, options): name must be a string");
  name_ = info[0].As<Napi::String>().Utf8Value();
  std::string pin_dir;
  std::vector<std::string> only_programs;
  bool select_programs = false;
  Napi::Object rodata;
  Napi::Object max_entries;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Value p = info[1].As<Napi::Object>().Get("pinDir");
    if (p.IsString()) pin_dir = p.As<Napi::String>().Utf8Value();
    Napi::Value progs = info[1].As<Napi::Object>().Get("programs");
    if (progs.IsArray()) {
      Napi::Array a = progs.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        if (!v.IsString()) throw Napi::TypeError::New(env, "BpfObject(name, options): programs must be strings");
        only_programs.push_back(v.As<Napi::String>().Utf8Value());
      }
      select_programs = true;
    }
    Napi::Value rd = info[1].As<Napi::Object>().Get("rodata");
    if (rd.IsObject()) rodata = rd.As<Napi::Object>();
    Napi::Value me = info[1].As<Napi::Object>().Get("maxEntries");
    if (me.IsObject()) max_entries = me.As<Napi::Object>();
  }

  size_t size = 0;
  const void *bytes = EmbeddedObject(name_, &size);
  if (!bytes)
    throw Napi::Error::New(env, "unknown BPF object '" + name_ + "' (embedded: " + EmbeddedObjectNames() + ")");

  std::string log;
  {
    std::lock_guard<std::mutex> lock(g_log_mu);
    g_log_capture = &log;
  }
  auto stop_capture = [&]() {
    std::lock_guard<std::mutex> lock(g_log_mu);
    g_log_capture = nullptr;
  };

  LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name_.c_str());
  obj_ = bpf_object__open_mem(bytes, size, &opts);
  if (!obj_) {
    int err = errno;
    stop_capture();
    ThrowSystemError(env, "bpf_object__open_mem", err, name_, log);
  }
  if (select_programs) {
    for (const std::string &want : only_programs) {
      if (!bpf_object__find_program_by_name(obj_, want.c_str())) {
        stop_capture();
        bpf_object__close(obj_);
        obj_ = nullptr;
        throw Napi::Error::New(env, "BPF object '" + name_ + "' has no program '" + want + "'");
      }
    }
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj_) {
      bool wanted = false;
      for (const std::string &want : only_programs) wanted = wanted || want == bpf_program__name(prog);
      bpf_program__set_autoload(prog, wanted);
    }
  }
  if (!rodata.IsEmpty()) {
    std::string bad = SetRodata(obj_, rodata);
    if (!bad.empty()) {
      stop_capture();
      bpf_object__close(obj_);
      obj_ = nullptr;
      throw Napi::Error::New(env, "BPF object '" + name_ + "': " + bad);
    }
  }
  if (!max_entries.IsEmpty()) {
    // Table sizes from the node config. A map already pinned keeps the size it was made
    // with (libbpf reuses a pinned map only when it matches): resizing means new pins.
    Napi::Array names = max_entries.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string mname = names.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value v = max_entries.Get(mname);
      struct bpf_map *map = bpf_object__find_map_by_name(obj_, mname.c_str());
      std::string bad;
      if (!map)
        bad = "has no map '" + mname + "'";
      else if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 1 ||
               v.As<Napi::Number>().DoubleValue() > 0xffffffff)
        bad = "maxEntries." + mname + " must be a positive 32-bit integer";
      if (!bad.empty()) {
        stop_capture();
        bpf_object__close(obj_);
        obj_ = nullptr;
        throw Napi::Error::New(env, "BPF object '" + name_ + "' " + bad);
      }
      uint32_t n = v.As<Napi::Number>().Uint32Value();
      if (!pin_dir.empty()) {
        int fd = bpf_obj_get((pin_dir + "/" + mname).c_str());
        if (fd >= 0) {
          // Pinned: reused as it is, so the object must ask for the size it has.
          struct bpf_map_info mi = {};
          uint32_t len = sizeof(mi);
          if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0) n = mi.max_entries;
          close(fd);
        }
      }
      bpf_map__set_max_entries(map, n);
    }
  }
  if (!pin_dir.empty()) {
    // libbpf reuses a compatible map already pinned at the path, or pins the new one:
    // that is how a restarted daemon adopts the fences (and unread events) of its
    // predecessor. Internal maps (.rodata, .bss) are per-load and never pinned.
    struct bpf_map *map;
    bpf_object__for_each_map(map, obj_) {
      const char *mname = bpf_map__name(map);
      if (mname[0] == '.' || bpf_map__is_internal(map)) continue;
      std::string path = pin_dir + "/" + mname;
      int err = bpf_map__set_pin_path(map, path.c_str());
      if (err) {
        stop_capture();
        bpf_object__close(obj_);
        obj_ = nullptr;
        ThrowSystemError(env, "bpf_map__set_pin_path", err, path);
      }
    }
  }
  int err = bpf_object__load(obj_);
  stop_capture();
  if (err) {
    bpf_object__close(obj_);
    obj_ = nullptr;
    ThrowSystemError(env, "bpf_object__load", err, name_, log);
  }
}

BpfObject::~BpfObject() { CloseObject(false); }

void BpfObject::CloseObject(bool unpin) {
  if (!obj_) return;
  if (unpin) {
    struct bpf_map *map;
    bpf_object__for_each_map(map, obj_) {
      if (bpf_map__is_pinned(map)) bpf_map__unpin(map, nullptr);
    }
  }
  bpf_object__close(obj_);
  obj_ = nullptr;
}

struct bpf_map *BpfObject::FindMap(Napi::Env env, const Napi::Value &name) {
  if (!obj_) throw Napi::Error::New(env, "BPF object '" + name_ + "' is closed");
  if (!name.IsString()) throw Napi::TypeError::New(env, "map name must be a string");
  std::string n = name.As<Napi::String>().Utf8Value();
  struct bpf_map *map = bpf_object__find_map_by_name(obj_, n.c_str());
  if (!map) throw Napi::Error::New(env, "BPF object '" + name_ + "' has no map '" + n + "'");
  return map;
}

struct bpf_program *BpfObject::FindProgram(Napi::Env env, const Napi::Value &name) {
  if (!obj_) throw Napi::Error::New(env, "BPF object '" + name_ + "' is closed");
  if (!name.IsString()) throw Napi::TypeError::New(env, "program name must be a string");
  std::string n = name.As<Napi::String>().Utf8Value();
  struct bpf_program *prog = bpf_object__find_program_by_name(obj_, n.c_str());
  if (!prog) throw Napi::Error::New(env, "BPF object '" + name_ + "' has no program '" + n + "'");
  return prog;
}

static Napi::Buffer<uint8_t> CheckedBuffer(Napi::Env env, const Napi::Value &v, size_t want, const char *what) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(env, std::string(what) + " must be a Buffer");
  auto b = v.As<Napi::Buffer<uint8_t>>();
  if (b.Length() != want)
    throw Napi::RangeError::New(
        env, std::string(what) + " must be " + std::to_string(want) + " bytes, got " + std::to_string(b.Length()));
  return b;
}

// mapUpdate(map, key, value, flags = BPF_ANY)
Napi::Value BpfObject::MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_map *map = FindMap(env, info[0]);
  auto key = CheckedBuffer(env, info[1], bpf_map__key_size(map), "key");
  auto value = CheckedBuffer(env, info[2], bpf_map__value_size(map), "value");
  uint64_t flags =
      info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : uint64_t(BPF_ANY);
  if (bpf_map_update_elem(bpf_map__fd(map), key.Data(), value.Data(), flags))
    ThrowSystemError(env, "bpf_map_update_elem", errno, bpf_map__name(map));
  return env.Undefined();
}

// mapLookup(map, key) -> Buffer | null
Napi::Value BpfObject::MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_map *map = FindMap(env, info[0]);
  auto key = CheckedBuffer(env, info[1], bpf_map__key_size(map), "key");
  // Per-CPU maps return one value per possible CPU.
  size_t vsize = bpf_map__value_size(map);
  enum bpf_map_type t = bpf_map__type(map);
  if (t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
      t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE)
    vsize = ((vsize + 7) & ~size_t(7)) * libbpf_num_possible_cpus();
  std::vector<uint8_t> value(vsize);
  if (bpf_map_lookup_elem(bpf_map__fd(map), key.Data(), value.data())) {
    if (errno == ENOENT) return env.Null();
    ThrowSystemError(env, "bpf_map_lookup_elem", errno, bpf_map__name(map));
  }
  return Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size());
}

// mapDelete(map, key) -> boolean (false when there was no such key)
Napi::Value BpfObject::MapDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_map *map = FindMap(env, info[0]);
  auto key = CheckedBuffer(env, info[1], bpf_map__key_size(map), "key");
  if (bpf_map_delete_elem(bpf_map__fd(map), key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowSystemError(env, "bpf_map_delete_elem", errno, bpf_map__name(map));
  }
  return Napi::Boolean::New(env, true);
}

// mapKeys(map) -> Buffer[]
Napi::Value BpfObject::MapKeys(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_map *map = FindMap(env, info[0]);
  size_t ksize = bpf_map__key_size(map);
  int fd = bpf_map__fd(map);
  std::vector<uint8_t> cur(ksize), next(ksize);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  const void *prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    out.Set(i++, Napi::Buffer<uint8_t>::Copy(env, next.data(), ksize));
    cur.swap(next);
    prev = cur.data();
    if (i > (1u << 24)) break;  // a map that keeps changing under us must not loop forever
  }
  if (errno != ENOENT && errno != 0) ThrowSystemError(env, "bpf_map_get_next_key", errno, bpf_map__name(map));
  return out;
}

static Napi::Object FdInfo(Napi::Env env, int fd, const char *what) {
  Napi::Object o = Napi::Object::New(env);
  if (fd < 0) return o;
  if (!strcmp(what, "map")) {
    struct bpf_map_info mi = {};
    uint32_t len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd, &mi, &len)) ThrowSystemError(env, "bpf_obj_get_info_by_fd", errno);
    o.Set("id", mi.id);
    o.Set("keySize", mi.key_size);
    o.Set("valueSize", mi.value_size);
    o.Set("maxEntries", mi.max_entries);
  } else {
    struct bpf_prog_info pi = {};
    uint32_t len = sizeof(pi);
    if (bpf_obj_get_info_by_fd(fd, &pi, &len)) ThrowSystemError(env, "bpf_obj_get_info_by_fd", errno);
    o.Set("id", pi.id);
  }
  o.Set("fd", fd);
  return o;
}

Napi::Value BpfObject::MapInfo(const Napi::CallbackInfo &info) {
  struct bpf_map *map = FindMap(info.Env(), info[0]);
  return FdInfo(info.Env(), bpf_map__fd(map), "map");
}

Napi::Value BpfObject::ProgramInfo(const Napi::CallbackInfo &info) {
  struct bpf_program *prog = FindProgram(info.Env(), info[0]);
  return FdInfo(info.Env(), bpf_program__fd(prog), "prog");
}

// attachTracing(program) -> BpfLink, for tp_btf / tracepoint / kprobe programs whose
// section names their hook.
Napi::Value BpfObject::AttachTracing(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_program *prog = FindProgram(env, info[0]);
  struct bpf_link *link = bpf_program__attach(prog);
  if (!link) ThrowSystemError(env, "bpf_program__attach", errno, bpf_program__name(prog));
  return BpfLink::Wrap(env, link);
}

// attachCgroup(program, cgroupPath) -> BpfLink (a bpf_link, so it is owned and detached by
// us and never collides with other programs attached to the same cgroup).
Napi::Value BpfObject::AttachCgroup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_program *prog = FindProgram(env, info[0]);
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "cgroup path must be a string");
  std::string path = info[1].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowSystemError(env, "open", errno, path);
  struct bpf_link *link = bpf_program__attach_cgroup(prog, fd);
  int err = errno;
  close(fd);  // the link holds its own reference to the cgroup
  if (!link) ThrowSystemError(env, "bpf_program__attach_cgroup", err, path);
  return BpfLink::Wrap(env, link);
}

// close({ unpin }) closes every map and program fd of the object; with unpin it also
// removes the map pins (links are owned by their BpfLink objects).
Napi::Value BpfObject::Close(const Napi::CallbackInfo &info) {
  bool unpin = false;
  if (info.Length() > 0 && info[0].IsObject()) unpin = info[0].As<Napi::Object>().Get("unpin").ToBoolean().Value();
  CloseObject(unpin);
  return info.Env().Undefined();
}

}  // namespace cgfence
