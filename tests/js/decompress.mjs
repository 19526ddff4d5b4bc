// Reads compressToUTF16 payloads (one JSON string per line on stdin) and prints
// the decompressed text of each as a JSON string, the way Timing71 clients decode state.
import LZString from "lz-string";
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const payload = JSON.parse(line);
  const text = LZString.decompressFromUTF16(payload);
  process.stdout.write(JSON.stringify(text) + "\n");
}
