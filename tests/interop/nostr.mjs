// An independent reader of Archy releases (PROTOCOL.md §4.1) using `nostr-tools`:
//   node nostr.mjs RELAY_URL
// reads every {"kinds":[30078],"#t":["archy-app"]} event from the relay, checks its Nostr
// signature (nostr-tools), the key binding and the DID JWS (jose + canonicalize, see jws.mjs),
// and prints one JSON line per event: {"id", "app", "version", "nostr_ok", "jws_ok", "error"}.
import WebSocket from 'ws';
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay';
import { verifyEvent } from 'nostr-tools/pure';
import { verifyEnvelope } from './jws.mjs';

useWebSocketImplementation(WebSocket);

const url = process.argv[2];
const relay = await Relay.connect(url);
const events = [];
await new Promise((resolve) => {
  const sub = relay.subscribe([{ kinds: [30078], '#t': ['archy-app'] }], {
    onevent(e) { events.push(e); },
    oneose() { sub.close(); resolve(); },
  });
});
relay.close();

for (const e of events) {
  const out = { id: e.id, nostr_ok: verifyEvent(e), jws_ok: false };
  try {
    const env = JSON.parse(e.content);
    out.app = env.manifest.id;
    out.version = env.manifest.version;
    const tag = (n) => e.tags.filter((t) => t[0] === n).map((t) => t[1]);
    if (env.manifest.publisher.nostr !== e.pubkey) throw new Error('publisher.nostr is not the event pubkey');
    if (tag('did')[0] !== env.manifest.publisher.did) throw new Error('did tag mismatch');
    if (tag('d')[0] !== `archy:app:${env.manifest.id}@${env.manifest.version}`) throw new Error('d tag mismatch');
    await verifyEnvelope(env);
    out.jws_ok = true;
  } catch (err) {
    out.error = err.message;
  }
  console.log(JSON.stringify(out));
}
process.exit(0);
