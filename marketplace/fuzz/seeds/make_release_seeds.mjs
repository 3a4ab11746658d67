// Writes the `release` fuzz target's event seeds (mode byte '0' + event JSON) from the committed
// test vectors, signed with nostr-tools (an independent implementation):
//   (cd tests/interop && npm ci) && node marketplace/fuzz/seeds/make_release_seeds.mjs
// The envelope is tests/vectors/envelope.json; the Nostr key is the vector's.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const { finalizeEvent } = await import(
  join(repo, 'tests/interop/node_modules/nostr-tools/lib/esm/pure.js'));
const key = JSON.parse(readFileSync(join(repo, 'tests/vectors/key.json'), 'utf8'));
const env = JSON.parse(readFileSync(join(repo, 'tests/vectors/envelope.json'), 'utf8'));
const secret = Uint8Array.from(Buffer.from(key.nostr_secret_hex, 'hex'));
const m = env.manifest;
const tags = [
  ['d', `archy:app:${m.id}@${m.version}`],
  ['t', 'archy-app'],
  ['version', m.version],
  ['did', m.publisher.did],
  ['x', m.image.archive.blake3],
];
// Before the fuzzers' clock (NOW = 1_750_000_000 in marketplace/fuzz/src/lib.rs).
const created_at = 1_749_999_000;
const sign = (content, t = tags) =>
  finalizeEvent({ kind: 30078, created_at, tags: t, content }, secret);
const write = (name, event) =>
  writeFileSync(join(here, 'release', name), '0' + JSON.stringify(event));

write('honest.json', sign(JSON.stringify(env)));
write('no-topic.json', sign(JSON.stringify(env), tags.filter((t) => t[0] !== 't')));
write('not-json.json', sign('{"manifest": {'));
const bad = sign(JSON.stringify(env));
bad.sig = (bad.sig[0] === '0' ? '1' : '0') + bad.sig.slice(1);
write('bad-sig.json', bad);
// Mode '1': the envelope as content; mode '2': the manifest, signed by the fuzz publisher.
writeFileSync(join(here, 'release', 'envelope.json'), '1' + JSON.stringify(env));
writeFileSync(join(here, 'release', 'manifest.json'), '2' + JSON.stringify(m));
