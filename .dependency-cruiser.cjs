// The layering of src/: data flows runtime → daemon → addon → kernel, and kernel events →
// daemon → audit log. A module may import from its own layer or a lower one, never upward.
// `npm run lint` checks it (dependency-cruiser), so a wrong-way import fails CI.
const upward = (from, to, why) => ({
  name: `no-${from.replace(/\W+/g, '-')}-to-${to.replace(/\W+/g, '-')}`,
  comment: why,
  severity: 'error',
  from: { path: `^src/(${from})(/|\\.ts$)` },
  to: { path: `^src/(${to})(/|\\.ts$)` },
});

module.exports = {
  forbidden: [
    upward('kernel', 'policy|audit|fence|containerd|image|daemon|sandbox|cli', 'kernel/ wraps the addon and BPF objects; it knows nothing of policy or containers'),
    upward('policy|audit', 'fence|containerd|image|daemon|sandbox|cli', 'policy/ and audit/ are leaves the fences and the daemon use'),
    upward('fence', 'containerd|daemon|sandbox|cli', 'backends get what they need handed in (fence/event-sink.ts); they never reach the daemon'),
    upward('containerd|image', 'fence|daemon|sandbox|cli', 'the containerd client and the image builder are leaves'),
    upward('daemon', 'sandbox|cli', 'the daemon is started by the CLI and the sandbox, not the other way round'),
    upward('sandbox', 'cli', 'the sandbox is used by the CLI'),
    {
      name: 'no-circular',
      comment: 'a cycle means two modules are one concept or a dependency is reached for instead of handed in',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true, dependencyTypes: ['local', 'import', 'require'], viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
