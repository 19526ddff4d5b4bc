// Reads a Timing71 recording the way the web app's replay does (timing71-wire §5.1, §5.3):
// zip.js lists the entries, frames are matched by name, the state at a second is the latest
// keyframe at or before it plus the intra-frames after it, patched with dictdiffer semantics as
// the web app applies them (adds assign, list removals leave holes). Written for this project's
// tests from the format description.
//
//   node replay.mjs RECORDING.zip  ->  one JSON line: {"manifest": ..., "states": {second: state}}
import { readFile } from 'node:fs/promises';
import { BlobReader, TextWriter, ZipReader } from '@zip.js/zip.js';

const FRAME = /^([0-9]{5,11})(i?).json$/;

function lookup(dest, path, parent) {
  if (path === '' || (Array.isArray(path) && path.length === 0)) return dest;
  let nodes = Array.isArray(path) ? [...path] : path.split('.');
  if (parent) nodes = nodes.slice(0, -1);
  let node = dest;
  for (const key of nodes) {
    if (!node[key]) node[key] = Array.isArray(path) ? [] : {};
    node = node[key];
  }
  return node;
}

function patch(ops, target) {
  const dest = JSON.parse(JSON.stringify(target));
  for (const [action, path, changes] of ops) {
    if (action === 'add') {
      const node = lookup(dest, path, false);
      for (const [key, value] of changes) node[key] = value;
    } else if (action === 'change') {
      const node = lookup(dest, path, true);
      const last = Array.isArray(path) ? path[path.length - 1] : path.split('.').slice(-1)[0];
      node[last] = changes[1];
    } else {
      const node = lookup(dest, path, false);
      for (const [key] of changes) delete node[key];
    }
  }
  return dest;
}

const data = await readFile(process.argv[2]);
const reader = new ZipReader(new BlobReader(new Blob([data])));
const entries = await reader.getEntries();
const keyframes = {};
const iframes = {};
let manifest = null;
for (const entry of entries) {
  const match = entry.filename.match(FRAME);
  if (match) {
    (match[2] ? iframes : keyframes)[parseInt(match[1], 10)] = entry;
  } else if (entry.filename === 'manifest.json') {
    manifest = JSON.parse(await entry.getData(new TextWriter()));
  }
}
const read = async (entry) => JSON.parse(await entry.getData(new TextWriter()));
const seconds = [...Object.keys(keyframes), ...Object.keys(iframes)].map(Number).sort((a, b) => a - b);
const states = {};
let state = null;
for (const second of seconds) {
  if (keyframes[second]) {
    state = await read(keyframes[second]);
  } else {
    const frame = await read(iframes[second]);
    state = {
      ...state,
      cars: patch(frame.cars, state.cars),
      session: patch(frame.session, state.session),
      messages: frame.messages.concat(state.messages).slice(0, 100),
      highlight: frame.highlight || [],
    };
  }
  states[second] = state;
}
await reader.close();
process.stdout.write(JSON.stringify({ manifest, states }) + '\n');
