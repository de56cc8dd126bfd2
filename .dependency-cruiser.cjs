// The layers of src/, bottom to top: a folder imports only from the folders below it (and its
// own); no cycle, type imports included. `npm run lint` checks it (docs/architecture.md draws it).
const LAYERS = [
  ["lines/", "inbox/"], // a line's grammar and values; following the inbox files
  ["schemas/"], // the apps' schemas, keys, migrations, judging a change
  ["store/"], // what cdp keeps: the journal, cdp.rej, compaction, the live table
  // files for services; a fleet's log on etcd, its hosts and rollout decisions (data the batches judge with)
  ["render/", "fleet/(log|hosts|rollouts)\\.ts"],
  ["pipeline/", "types\\.ts"], // start-up and the running pipeline; its shapes
  // a fleet host's part, plugged in behind the pipeline's commit point: member, clock, migrations
  ["fleet/(host|member|rollout-clock|versions)\\.ts"],
  ["sidecar/"], // the HTTP sidecar
  ["index\\.ts"], // the public API
  ["cli/", "cli\\.ts"], // the cdp command, on the public API
];

const pathOf = (patterns) => `^src/(${patterns.join("|")})`;

const upward = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `no-upward-from-layer-${i + 1}`,
  comment: `${layer.join(" and ")} may import only from the layers below (see .dependency-cruiser.cjs)`,
  severity: "error",
  from: { path: pathOf(layer) },
  to: { path: pathOf(LAYERS.slice(i + 1).flat()) },
}));

module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment: "a cycle (type imports included) means two modules cannot be understood apart",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    ...upward,
    {
      name: "shared-leaves",
      comment: "errors.ts and version.ts are imported by every layer: they import none",
      severity: "error",
      from: { path: "^src/(errors|version)\\.ts$" },
      to: { path: "^src/" },
    },
    {
      name: "no-dev-dependencies-in-src",
      comment: "what the package runs must be in its dependencies (etcd3 is an optional peer: loaded only in a fleet)",
      severity: "error",
      from: { path: "^src/" },
      to: { dependencyTypes: ["npm-dev"], dependencyTypesNot: ["type-only", "npm-peer"] },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] },
  },
};
