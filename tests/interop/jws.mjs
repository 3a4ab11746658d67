// An independent check of Archy's manifest signature (PROTOCOL.md §3), using only the `did:key`
// string, RFC 8785 (`canonicalize`) and a JOSE library (`jose`).
//
//   node jws.mjs verify ENVELOPE.json        exit 0 if the signature verifies, 1 otherwise
//   node jws.mjs sign MANIFEST.json OUT.json  makes a fresh did:key, signs the manifest with it
//                                             (publisher.did is set to that DID) and writes the envelope
import { readFileSync, writeFileSync } from 'node:fs';
import * as jose from 'jose';
import canonicalize from 'canonicalize';
import { base58, base64urlnopad } from '@scure/base';

const ED25519_PUB = [0xed, 0x01];

function keyFromDid(did) {
  if (!did.startsWith('did:key:z')) throw new Error(`not a base58btc did:key: ${did}`);
  const bytes = base58.decode(did.slice('did:key:z'.length));
  if (bytes[0] !== ED25519_PUB[0] || bytes[1] !== ED25519_PUB[1] || bytes.length !== 34) {
    throw new Error('not an Ed25519 did:key');
  }
  return jose.importJWK({ kty: 'OKP', crv: 'Ed25519', x: base64urlnopad.encode(bytes.slice(2)) }, 'EdDSA');
}

function didFromPublic(raw) {
  return 'did:key:z' + base58.encode(Uint8Array.from([...ED25519_PUB, ...raw]));
}

export async function verifyEnvelope(env) {
  const did = env.manifest.publisher.did;
  const [h, empty, s] = env.signature.split('.');
  if (empty !== '') throw new Error('signature is not detached');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  const kid = `${did}#${did.slice('did:key:'.length)}`;
  if (header.alg !== 'EdDSA' || header.kid !== kid) throw new Error(`bad header ${JSON.stringify(header)}`);
  const payload = base64urlnopad.encode(new TextEncoder().encode(canonicalize(env.manifest)));
  await jose.compactVerify(`${h}.${payload}.${s}`, await keyFromDid(did), { algorithms: ['EdDSA'] });
  return did;
}

async function verify(path) {
  const env = JSON.parse(readFileSync(path, 'utf8'));
  const did = await verifyEnvelope(env);
  console.log(`verified ${env.manifest.id} ${env.manifest.version} signed by ${did}`);
}

async function sign(manifestPath, outPath) {
  const { publicKey, privateKey } = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  const did = didFromPublic(base64urlnopad.decode(jwk.x));
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  manifest.publisher = { ...manifest.publisher, did };
  const kid = `${did}#${did.slice('did:key:'.length)}`;
  const jws = await new jose.CompactSign(new TextEncoder().encode(canonicalize(manifest)))
    .setProtectedHeader({ alg: 'EdDSA', kid })
    .sign(privateKey);
  const [h, , s] = jws.split('.');
  writeFileSync(outPath, JSON.stringify({ manifest, signature: `${h}..${s}` }, null, 2));
  console.log(`signed with ${did}`);
}

const [cmd, ...args] = process.argv.slice(2);
if (import.meta.url === `file://${process.argv[1]}`) try {
  if (cmd === 'verify') await verify(args[0]);
  else if (cmd === 'sign') await sign(args[0], args[1]);
  else throw new Error('usage: node jws.mjs verify ENVELOPE | sign MANIFEST OUT');
} catch (e) {
  console.error(`error: ${e.message}`);
  process.exit(1);
}
