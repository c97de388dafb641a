{
  "targets": [
    {
      "target_name": "cgfence",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/bpf-objects.cc",
        "native/audit-netlink.cc",
        "native/peer-credentials.cc",
        "native/rename-exchange.cc",
        "native/bpf-object.cc",
        "native/bpf-link.cc",
        "native/ring-buffer.cc",
        "native/seccomp.cc",
        "native/seccomp-notify.cc",
        "native/exec-target.cc",
        "native/fd-holder-client.cc"
      ],
      "include_dirs": [
        "<!@(node -p \"require('node-addon-api').include\")",
        ".output/bpf",
        "bpf/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wno-missing-field-initializers", "<!@(pkg-config --cflags libbpf libseccomp)"],
      "libraries": ["<!@(pkg-config --libs libbpf libseccomp)"]
    },
    {
      "target_name": "cgfence-fd-holder",
      "type": "executable",
      "sources": ["native/fd-holder/main.c", "native/fd-holder/runc-state.c", "native/cgfence-runc/strict-json.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "<!@(pkg-config --cflags json-c)"],
      "ldflags": ["-static"],
      "libraries": ["<!@(pkg-config --libs --static json-c)"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
