//! PROTOCOL.md §4.1 checks 1–5 on events built in memory: one case per reason code, plus the
//! catalog's version monotonicity. (The same events travel through real relays in `discovery.rs`.)

use archy_marketplace::catalog::{Catalog, Outcome};
use archy_marketplace::manifest::PolicyConfig;
use archy_marketplace::reason::Reason;
use archy_marketplace::release::check_release;
use archy_tests::forge::{with_bad_signature, Publisher};
use nostr_sdk::prelude::{Event, JsonUtil};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;

fn reason(event: &Event) -> Reason {
    check_release(event, &PolicyConfig::default(), NOW)
        .expect_err("the event must be rejected")
        .reason
}

#[test]
fn honest_release_passes() {
    let p = Publisher::new(1);
    let v = check_release(
        &p.release_of("hello", "1.0.0"),
        &PolicyConfig::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(v.manifest.id, "hello");
}

#[test]
fn each_hostile_event_gets_its_own_reason() {
    let p = Publisher::new(1);
    let other = Publisher::new(2);
    let env = p.sign(p.manifest("hello", "1.0.0"));
    let tags = Publisher::tags_of(&env);
    let content = env.to_json();
    let t = NOW - 10;

    // Bad signature: serialised with a changed sig, parsed back.
    let bad = Event::from_json(with_bad_signature(&p.release_of("hello", "1.0.0"))).unwrap();
    assert_eq!(reason(&bad), Reason::EventInvalid);

    // Manifest tampered after signing (a valid Nostr signature over the changed content).
    let mut tampered = env.clone();
    tampered.manifest.insert("summary".into(), json!("changed"));
    assert_eq!(
        reason(&p.raw_event(tampered.to_json(), tags.clone(), t)),
        Reason::JwsInvalid
    );

    // `did` tag ≠ the manifest's DID (the JWS kid).
    let mut did_tag = tags.clone();
    did_tag[3][1] = other.did();
    assert_eq!(
        reason(&p.raw_event(content.clone(), did_tag, t)),
        Reason::DidMismatch
    );

    // Manifest names another DID than the one whose key signed the JWS: kid mismatch.
    let mut swapped = env.clone();
    swapped.manifest["publisher"]["did"] = Value::from(other.did());
    let mut swapped_tags = tags.clone();
    swapped_tags[3][1] = other.did();
    assert_eq!(
        reason(&p.raw_event(swapped.to_json(), swapped_tags, t)),
        Reason::KidMismatch
    );

    // publisher.nostr ≠ event pubkey: another key relays p's release.
    assert_eq!(
        reason(&other.raw_event(content.clone(), tags.clone(), t)),
        Reason::PubkeyMismatch
    );

    // d / version / x tags ≠ manifest.
    for (i, value) in [
        (0, "archy:app:hello@9.9.9"),
        (2, "9.9.9"),
        (4, &"00".repeat(32)[..]),
    ] {
        let mut changed = tags.clone();
        changed[i][1] = value.to_owned();
        assert_eq!(
            reason(&p.raw_event(content.clone(), changed, t)),
            Reason::TagMismatch,
            "tag {i}"
        );
    }

    // Missing and duplicated tags.
    let mut missing = tags.clone();
    missing.remove(4);
    assert_eq!(
        reason(&p.raw_event(content.clone(), missing, t)),
        Reason::TagMissing
    );
    let mut no_topic = tags.clone();
    no_topic.remove(1);
    assert_eq!(
        reason(&p.raw_event(content.clone(), no_topic, t)),
        Reason::TagMissing
    );
    let mut dup = tags.clone();
    dup.push(tags[2].clone());
    assert_eq!(
        reason(&p.raw_event(content.clone(), dup, t)),
        Reason::TagDuplicate
    );

    // Policy violations (privileged; host path; disallowed capability), properly signed.
    for (field, value) in [
        ("privileged", json!(true)),
        ("binds", json!(["/:/host"])),
        ("security", json!({"capabilities": ["SYS_ADMIN"]})),
    ] {
        let mut m = p.manifest("hello", "1.0.0");
        m.insert(field.into(), value);
        assert_eq!(reason(&p.release(m)), Reason::Policy, "{field}");
    }
    // Schema violation.
    let mut m = p.manifest("hello", "1.0.0");
    m.insert("version".into(), json!("one"));
    let env2 = p.sign(m);
    let mut t2 = Publisher::tags_of(&env2);
    t2[0][1] = "archy:app:hello@one".into();
    assert_eq!(reason(&p.raw_event(env2.to_json(), t2, t)), Reason::Schema);

    // Content over 96 KiB.
    let mut big = p.manifest("hello", "1.0.0");
    big.insert("x-padding".into(), json!("x".repeat(100 * 1024)));
    assert_eq!(reason(&p.release(big)), Reason::ContentTooLarge);

    // Too many tags.
    let mut many = tags.clone();
    for i in 0..60 {
        many.push(vec!["t".into(), format!("extra{i}")]);
    }
    assert_eq!(
        reason(&p.raw_event(content.clone(), many, t)),
        Reason::TooManyTags
    );

    // Malformed JSON; wrong shape.
    assert_eq!(
        reason(&p.raw_event("{not json".into(), tags.clone(), t)),
        Reason::ContentJson
    );
    assert_eq!(
        reason(&p.raw_event(
            json!({"manifest": {}, "signature": "", "extra": 1}).to_string(),
            tags.clone(),
            t
        )),
        Reason::ContentShape
    );

    // created_at a day ahead.
    assert_eq!(
        reason(&p.raw_event(content.clone(), tags.clone(), NOW + 86_400)),
        Reason::CreatedAtFuture
    );

    // Expired.
    let mut exp = p.manifest("hello", "1.0.0");
    exp.insert("expires_at".into(), json!(NOW - 1));
    assert_eq!(reason(&p.release(exp)), Reason::Expired);

    // Manifest over 48 KiB of JCS but content under 96 KiB.
    let mut large = p.manifest("hello", "1.0.0");
    large.insert("x-padding".into(), json!("y".repeat(60 * 1024)));
    assert_eq!(reason(&p.release(large)), Reason::ManifestTooLarge);
}

#[test]
fn catalog_monotonicity_duplicates_and_equivocation() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
    let policy = PolicyConfig::default();
    let p = Publisher::new(3);
    let v2 = p.release_of("hello", "2.0.0");
    assert_eq!(catalog.ingest(&v2, &policy, NOW).unwrap(), Outcome::Latest);
    assert_eq!(
        catalog.ingest(&v2, &policy, NOW).unwrap(),
        Outcome::AlreadySeen
    );
    // The same release re-signed (new event id, identical manifest bytes): duplicate.
    let env = p.sign(p.manifest("hello", "2.0.0"));
    let again = p.raw_event(env.to_json(), Publisher::tags_of(&env), NOW - 5);
    assert_ne!(again.id, v2.id);
    assert_eq!(
        catalog.ingest(&again, &policy, NOW).unwrap(),
        Outcome::Duplicate
    );
    // A lower version after a higher one: history, never the latest.
    let v1 = p.release_of("hello", "1.0.0");
    assert_eq!(catalog.ingest(&v1, &policy, NOW).unwrap(), Outcome::History);
    assert_eq!(
        catalog.latest(&p.did(), "hello").unwrap().unwrap().version,
        "2.0.0"
    );
    assert_eq!(catalog.releases(&p.did(), "hello").unwrap().len(), 2);
    // Same version, other bytes: equivocation, kept as evidence.
    let mut m = p.manifest("hello", "2.0.0");
    m.insert("summary".into(), json!("a different 2.0.0"));
    let eq = p.release(m);
    match catalog.ingest(&eq, &policy, NOW).unwrap() {
        Outcome::Rejected(r) => assert_eq!(r.reason, Reason::Equivocation),
        other => panic!("expected equivocation, got {other:?}"),
    }
    assert_eq!(
        catalog.equivocations_by(&p.identity.nostr_hex()).unwrap(),
        1
    );
    // Build metadata is ignored for precedence: 2.0.0+other is the same version.
    let mut m = p.manifest("hello", "2.0.0");
    m.insert("version".into(), json!("2.0.0+other"));
    let build = p.release(m);
    assert!(
        matches!(catalog.ingest(&build, &policy, NOW).unwrap(), Outcome::Rejected(r) if r.reason == Reason::Equivocation)
    );
    // The catalog survives a reopen.
    drop(catalog);
    let catalog = Catalog::open(&dir.path().join("catalog.redb")).unwrap();
    assert_eq!(
        catalog.latest(&p.did(), "hello").unwrap().unwrap().version,
        "2.0.0"
    );
    assert_eq!(catalog.rejected().unwrap().len(), 2);
}
