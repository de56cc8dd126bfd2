// The sidecar's /metrics in the Prometheus text format (prom-client), on a registry of its own
// so that an embedding service's default registry is left alone.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Pipeline } from "../types.js";
import type { RenderStatus } from "../render/renderer.js";
import type { EventStream } from "./stream.js";
import type { Refusals } from "./tokens.js";
import { VERSION } from "../version.js";

export function createMetrics(pipeline: Pipeline, stream: EventStream, refused: Refusals): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "cdp_" });
  // prom-client names three gauges "…_total", which is for counters (promtool check metrics
  // refuses them); the same counts by type, without the suffix, stay
  for (const name of ["active_handles", "active_requests", "active_resources"]) registry.removeSingleMetric(`cdp_nodejs_${name}_total`);
  const lines = new Counter({ name: "cdp_lines_total", help: "Inbox change lines processed, by outcome", labelNames: ["outcome"], registers: [registry] });
  lines.inc({ outcome: "accepted" }, 0);
  lines.inc({ outcome: "rejected" }, 0);
  const latency = new Histogram({
    name: "cdp_apply_latency_seconds",
    help: "From reading a batch of inbox lines to the table applying it (journal fsync included)",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  pipeline.events.on("batch", ({ accepted, rejected, seconds }) => {
    if (accepted > 0) lines.inc({ outcome: "accepted" }, accepted);
    if (rejected > 0) lines.inc({ outcome: "rejected" }, rejected);
    latency.observe(seconds);
  });
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  new Gauge({ name: "cdp_build_info", help: "Always 1: the version of cdp serving these metrics", labelNames: ["version"], registers: [registry] }).set(
    { version: VERSION },
    1,
  );
  let lastChange = 0;
  pipeline.table.subscribeAll((event) => void (lastChange = Date.parse(event.time) / 1000));
  gauge("cdp_last_change_timestamp_seconds", "When the last change was applied (Unix time; 0: none since cdp started)", () => lastChange);
  gauge("cdp_revision", "The revision of the last applied change", () => pipeline.table.revision);
  new Gauge({
    name: "cdp_schema_version",
    help: "Each app's schema version in force (x-cdp-version; 1 when the schema declares none)",
    labelNames: ["app"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [app, schema] of pipeline.schemas) this.set({ app }, schema.version);
    },
  });
  gauge("cdp_ready", "1 while cdp takes changes (see /readyz), else 0", () => (pipeline.notReady() === undefined ? 1 : 0));
  gauge("cdp_sse_clients", "Clients connected to the event stream", () => stream.clients);
  gauge("cdp_diverged_keys", "Fleet mode: keys whose fleet change this host's schemas refuse (it keeps the last good value)", () => pipeline.diverged);
  // per render target (none without --render)
  new Counter({
    name: "cdp_render_failures_total",
    help: "Renders of a target that failed (render, write, check, reload or health)",
    labelNames: ["target"],
    registers: [registry],
    collect() {
      this.reset();
      for (const status of pipeline.renders) this.inc({ target: status.dest }, status.failures);
    },
  });
  const perTarget = (name: string, help: string, read: (status: RenderStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["target"],
      registers: [registry],
      collect() {
        this.reset();
        for (const status of pipeline.renders) this.set({ target: status.dest }, read(status));
      },
    });
  perTarget("cdp_render_last_timestamp_seconds", "When a target was last rendered (Unix time; 0: not yet)", (status) => status.lastTime / 1000);
  perTarget("cdp_render_last_ok", "1 when a target's last render went well, else 0", (status) => (status.lastOk ? 1 : 0));
  counter("cdp_inbox_outages_total", "Times the inbox became unavailable", () => pipeline.outages);
  counter("cdp_subscriber_errors_total", "Times a subscriber threw or rejected", () => pipeline.table.subscriberErrors);
  new Counter({
    name: "cdp_http_refusals_total",
    help: "Requests refused for what their token lacks: a known token (401), a scope, an app or secrets (403)",
    labelNames: ["scope"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [scope, count] of Object.entries(refused)) this.inc({ scope }, count);
    },
  });
  return registry;
}
