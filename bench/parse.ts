// How long the grammar takes on pathological lines of the maximum length (64 KiB): it must
// grow linearly with the line, never worse. Run with `npm run bench`.
import { parseLine } from "../src/lines/parse.js";

const MAX = 65536;
const cases: Record<string, (size: number) => string> = {
  "short change": () => "ticker:interval:1500",
  "long value": (size) => `app:key:${"x".repeat(size - 8)}`,
  "value of colons": (size) => `app:key:${":".repeat(size - 8)}`,
  "key of many segments": (size) => `app:${"b.".repeat((size - 8) / 2)}b:1`,
  "long app name (error)": (size) => `${"a".repeat(size - 6)}:b:1`,
  "spaces (blank)": (size) => " ".repeat(size),
  "spaces then text (error)": (size) => `${" ".repeat(size - 1)}x`,
  comment: (size) => `#${"x".repeat(size - 1)}`,
};

function timeOf(line: string): number {
  const rounds = line.length < 100 ? 20_000 : 5;
  const started = performance.now();
  for (let i = 0; i < rounds; i++) parseLine(line);
  return (performance.now() - started) / rounds;
}

console.log("| line (parseLine) | 16 KiB | 64 KiB | ratio (linear: ~4) |\n| --- | --- | --- | --- |");
for (const [name, make] of Object.entries(cases)) {
  const small = timeOf(make(MAX / 4));
  const large = timeOf(make(MAX));
  console.log(`| ${name} | ${small.toFixed(3)} ms | ${large.toFixed(3)} ms | ${(large / small).toFixed(1)} |`);
}
