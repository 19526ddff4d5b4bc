// Reads JSON strings (one per line on stdin) and prints LZString.compressToUTF16 of each as a
// JSON string: the reference output our Python compressor must reproduce exactly.
import LZString from "lz-string";
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  process.stdout.write(JSON.stringify(LZString.compressToUTF16(JSON.parse(line))) + "\n");
}
