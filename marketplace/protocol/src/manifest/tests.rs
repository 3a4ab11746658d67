//! One rejecting and one accepting case for every schema and policy rule of PROTOCOL.md §2.

use super::*;
use crate::reason::Reason;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn base() -> Map<String, Value> {
    crate::testing::manifest()
}

fn check(m: &Map<String, Value>) -> Vec<Violation> {
    validate(m, &PolicyConfig::default(), NOW)
}

/// Applies `f` to the base manifest and returns the violations.
fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Vec<Violation> {
    let mut m = base();
    f(&mut m);
    check(&m)
}

fn set(key: &str, value: Value) -> Vec<Violation> {
    with(|m| {
        m.insert(key.into(), value);
    })
}

#[track_caller]
fn assert_rejects(violations: Vec<Violation>, field: &str, reason: Reason) {
    assert!(
        violations
            .iter()
            .any(|v| v.field == field && v.reason == reason),
        "expected {reason} on {field}, got {violations:#?}"
    );
}

#[track_caller]
fn assert_ok(violations: Vec<Violation>) {
    assert!(
        violations.is_empty(),
        "expected no violations, got {violations:#?}"
    );
}

#[test]
fn base_passes() {
    assert_ok(check(&base()));
}

#[test]
fn every_required_field_is_required() {
    for key in [
        "schema",
        "id",
        "version",
        "name",
        "summary",
        "publisher",
        "origin",
        "image",
        "published_at",
    ] {
        assert_rejects(
            with(|m| {
                m.remove(key);
            }),
            key,
            Reason::Schema,
        );
    }
    assert_rejects(
        with(|m| {
            m["image"]["archive"]
                .as_object_mut()
                .unwrap()
                .remove("blake3");
        }),
        "image.archive.blake3",
        Reason::Schema,
    );
}

#[test]
fn reports_every_violation_not_just_the_first() {
    let v = with(|m| {
        m.insert("id".into(), json!("Bad"));
        m.insert("version".into(), json!("1"));
        m.insert("privileged".into(), json!(true));
    });
    assert_eq!(v.len(), 3, "{v:#?}");
}

#[test]
fn schema_string() {
    assert_rejects(
        set("schema", json!("archy.app/v3")),
        "schema",
        Reason::Schema,
    );
    assert_ok(set("schema", json!("archy.app/v2")));
    assert_rejects(set("schema", json!(1)), "schema", Reason::Schema);
}

#[test]
fn id_pattern() {
    for bad in [
        "a",
        "Hello",
        "1abc",
        "ab_c",
        &format!("a{}", "b".repeat(63)),
    ] {
        assert_rejects(set("id", json!(bad)), "id", Reason::Schema);
    }
    for good in ["ab", "a-1", &format!("a{}", "b".repeat(62))] {
        assert_ok(set("id", json!(good)));
    }
}

#[test]
fn version_semver() {
    for bad in ["1.2", "v1.2.3", "01.2.3", "1.2.3-", ""] {
        assert_rejects(set("version", json!(bad)), "version", Reason::Schema);
    }
    for good in ["0.0.1", "1.2.3-rc.1", "1.2.3+build.5"] {
        assert_ok(set("version", json!(good)));
    }
}

#[test]
fn name_and_summary_lengths_count_code_points() {
    assert_rejects(set("name", json!("")), "name", Reason::Schema);
    assert_rejects(set("name", json!("x".repeat(81))), "name", Reason::Schema);
    assert_ok(set("name", json!("é".repeat(80))));
    assert_rejects(
        set("summary", json!("y".repeat(281))),
        "summary",
        Reason::Schema,
    );
    assert_ok(set("summary", json!("😀".repeat(280))));
}

#[test]
fn publisher_did_must_be_ed25519_did_key() {
    let secp = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme";
    assert_rejects(
        with(|m| m["publisher"]["did"] = json!(secp)),
        "publisher.did",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| m["publisher"]["did"] = json!("did:web:example.com")),
        "publisher.did",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| m["publisher"]["nostr"] = json!("A".repeat(64))),
        "publisher.nostr",
        Reason::Schema,
    );
}

#[test]
fn origin_shape() {
    assert_rejects(
        with(|m| m["origin"]["endpoint"] = json!("xyz")),
        "origin.endpoint",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| m["origin"]["addrs"] = json!(["localhost:80"])),
        "origin.addrs[0]",
        Reason::Schema,
    );
    assert_ok(with(|m| m["origin"]["addrs"] = json!([])));
}

#[test]
fn image_fields() {
    assert_rejects(
        with(|m| m["image"]["name"] = json!("Not/Valid")),
        "image.name",
        Reason::Schema,
    );
    assert_ok(with(|m| {
        m["image"]["name"] = json!("registry.example:5000/a/b_c:v1.0")
    }));
    assert_rejects(
        with(|m| m["image"]["id"] = json!("c".repeat(64))),
        "image.id",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| m["image"]["archive"]["format"] = json!("zip")),
        "image.archive.format",
        Reason::Schema,
    );
    assert_ok(with(|m| {
        m["image"]["archive"]["format"] = json!("docker-archive")
    }));
    assert_rejects(
        with(|m| m["image"]["archive"]["size"] = json!(-1)),
        "image.archive.size",
        Reason::Schema,
    );
}

#[test]
fn numbers_are_safe_integers_everywhere() {
    assert_rejects(set("x-custom", json!(1.5)), "x-custom", Reason::Schema);
    assert_rejects(
        set("x-big", json!(9_007_199_254_740_993u64)),
        "x-big",
        Reason::Schema,
    );
    assert_rejects(
        set("x-nested", json!({"a": [1, 2.25]})),
        "x-nested.a[1]",
        Reason::Schema,
    );
    assert_ok(set("x-custom", json!(9_007_199_254_740_992u64)));
    // 1.0 is the integer 1 (JCS writes it so).
    let m = super::parse(r#"{"a": 1.0}"#).unwrap();
    let mut b = base();
    b.insert("x-float-int".into(), m["a"].clone());
    assert_ok(check(&b));
    assert_ok(set("stop_grace_secs", m["a"].clone()));
}

#[test]
fn unknown_fields_are_preserved_and_accepted() {
    assert_ok(set("x-vendor", json!({"anything": ["goes", true]})));
}

#[test]
fn forbidden_fields() {
    for key in [
        "privileged",
        "devices",
        "host_mounts",
        "binds",
        "security_opt",
        "cap_add",
    ] {
        assert_rejects(set(key, json!(true)), key, Reason::Policy);
        assert_rejects(set(key, json!(["x"])), key, Reason::Policy);
        for empty in [json!(false), json!(null), json!(""), json!([]), json!({})] {
            assert_ok(set(key, empty));
        }
    }
    for key in ["network", "network_mode"] {
        assert_rejects(set(key, json!("host")), key, Reason::Policy);
        assert_ok(set(key, json!("bridge")));
        assert_ok(set(key, json!("none")));
    }
    for key in ["pid", "ipc", "userns", "uts", "cgroupns"] {
        assert_rejects(set(key, json!("host")), key, Reason::Policy);
        assert_ok(set(key, json!("")));
    }
}

#[test]
fn capabilities_against_allowlist() {
    let caps = |c: Value| set("security", json!({"capabilities": c}));
    assert_rejects(
        caps(json!(["SYS_ADMIN"])),
        "security.capabilities[0]",
        Reason::Policy,
    );
    assert_rejects(
        caps(json!(["chown", "cap_net_raw"])),
        "security.capabilities[1]",
        Reason::Policy,
    );
    assert_ok(caps(json!(["chown", "CAP_SETUID", "Net_Bind_Service"])));
    let mut m = base();
    m.insert("security".into(), json!({"capabilities": ["NET_RAW"]}));
    let mut policy = PolicyConfig::default();
    policy.capability_allowlist.push("cap_net_raw".into());
    assert!(validate(&m, &policy, NOW).is_empty());
    assert_rejects(
        set("security", json!({"read_only_root": "yes"})),
        "security.read_only_root",
        Reason::Schema,
    );
}

#[test]
fn ports() {
    let port = |p: Value| set("ports", json!([p]));
    assert_rejects(
        port(json!({"container": 80, "host": 80})),
        "ports[0].host",
        Reason::Policy,
    );
    assert_ok(port(json!({"container": 80, "host": 1024})));
    assert_rejects(
        port(json!({"container": 0, "host": 8080})),
        "ports[0].container",
        Reason::Schema,
    );
    assert_rejects(
        port(json!({"container": 80, "host": 70000})),
        "ports[0].host",
        Reason::Schema,
    );
    assert_rejects(
        port(json!({"container": 80, "host": 8080, "protocol": "sctp"})),
        "ports[0].protocol",
        Reason::Schema,
    );
    assert_ok(port(
        json!({"container": 80, "host": 8080, "protocol": "udp"}),
    ));
    for bad in ["0.0.0.0", "192.168.1.2", "::", "::ffff:127.0.0.1"] {
        assert_rejects(
            port(json!({"container": 80, "host": 8080, "bind": bad})),
            "ports[0].bind",
            Reason::Policy,
        );
    }
    assert_rejects(
        port(json!({"container": 80, "host": 8080, "bind": "localhost"})),
        "ports[0].bind",
        Reason::Schema,
    );
    for good in ["127.0.0.1", "127.1.2.3", "::1"] {
        assert_ok(port(json!({"container": 80, "host": 8080, "bind": good})));
    }
    let mut m = base();
    m.insert(
        "ports".into(),
        json!([{"container": 80, "host": 8080, "bind": "0.0.0.0"}]),
    );
    let policy = PolicyConfig {
        allow_non_loopback_binds: true,
        ..PolicyConfig::default()
    };
    assert!(validate(&m, &policy, NOW).is_empty());
}

#[test]
fn volumes() {
    let vol = |t: &str| set("volumes", json!([{"name": "data", "target": t}]));
    for bad in ["data", "/", "/data/../etc", "/data//x", "/data/", "/./x"] {
        assert_rejects(vol(bad), "volumes[0].target", Reason::Policy);
    }
    for good in ["/data", "/data/..foo", "/var/lib/app"] {
        assert_ok(vol(good));
    }
    assert_rejects(
        set("volumes", json!([{"name": "Data", "target": "/data"}])),
        "volumes[0].name",
        Reason::Schema,
    );
}

#[test]
fn limits() {
    let ports: Vec<Value> = (0..17)
        .map(|i| json!({"container": 80, "host": 2000 + i}))
        .collect();
    assert_rejects(set("ports", json!(ports)), "ports", Reason::Policy);
    assert_ok(set("ports", json!(ports[..16])));
    let vols: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("v{i}"), "target": format!("/v{i}")}))
        .collect();
    assert_rejects(set("volumes", json!(vols)), "volumes", Reason::Policy);
    let env: Map<String, Value> = (0..65).map(|i| (format!("K{i}"), json!("v"))).collect();
    assert_rejects(
        set("env", Value::Object(env.clone())),
        "env",
        Reason::Policy,
    );
    let env64: Map<String, Value> = env.into_iter().take(64).collect();
    assert_ok(set("env", Value::Object(env64)));
    let secrets: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("s{i}"), "kind": "hex16", "env": format!("S{i}")}))
        .collect();
    assert_rejects(
        set("generated_secrets", json!(secrets)),
        "generated_secrets",
        Reason::Policy,
    );
    assert_rejects(
        set("command", json!(vec!["x"; 65])),
        "command",
        Reason::Policy,
    );
    assert_ok(set("command", json!(vec!["x"; 64])));
}

#[test]
fn env_keys_and_values() {
    assert_rejects(set("env", json!({"1BAD": "x"})), "env.1BAD", Reason::Schema);
    assert_rejects(set("env", json!({"GOOD": 1})), "env.GOOD", Reason::Schema);
    assert_ok(set("env", json!({"_Good_1": "x"})));
}

#[test]
fn generated_secrets() {
    let s = |v: Value| set("generated_secrets", json!([v]));
    assert_rejects(
        s(json!({"name": "t", "kind": "hex8", "env": "T"})),
        "generated_secrets[0].kind",
        Reason::Schema,
    );
    assert_rejects(
        s(json!({"name": "T", "kind": "hex16", "env": "T"})),
        "generated_secrets[0].name",
        Reason::Schema,
    );
    assert_rejects(
        s(json!({"name": "t", "kind": "base64", "env": "T-1"})),
        "generated_secrets[0].env",
        Reason::Schema,
    );
    assert_ok(s(json!({"name": "t", "kind": "base64", "env": "T"})));
}

#[test]
fn health_check() {
    let hc = |v: Value| set("health_check", v);
    assert_rejects(
        hc(json!({"type": "grpc"})),
        "health_check.type",
        Reason::Schema,
    );
    assert_rejects(
        hc(json!({"type": "http"})),
        "health_check.port",
        Reason::Schema,
    );
    assert_rejects(
        hc(json!({"type": "http", "port": 80, "path": "x"})),
        "health_check.path",
        Reason::Schema,
    );
    assert_rejects(
        hc(json!({"type": "exec"})),
        "health_check.command",
        Reason::Schema,
    );
    // The checked port must be published (see `orchestrator_rules_are_checked_here_too`).
    assert_ok(with(|m| {
        m.insert("ports".into(), json!([{"container": 80, "host": 18080}]));
        m.insert(
            "health_check".into(),
            json!({"type": "http", "port": 80, "path": "/", "interval_s": 5, "timeout_s": 2, "retries": 3}),
        );
    }));
    assert_ok(hc(json!({"type": "exec", "command": ["true"]})));
}

#[test]
fn dependencies_resources_grace_expiry() {
    assert_rejects(
        set(
            "dependencies",
            json!([{"app": "db", "version": "not a range"}]),
        ),
        "dependencies[0].version",
        Reason::Schema,
    );
    assert_ok(set(
        "dependencies",
        json!([{"app": "db", "version": "^1.2"}]),
    ));
    assert_rejects(
        set("resources", json!({"cpus": "lots"})),
        "resources.cpus",
        Reason::Schema,
    );
    assert_ok(set("resources", json!({"cpus": "0.5", "memory_mb": 64})));
    assert_ok(set("resources", json!({"cpus": 2})));
    assert_rejects(
        set("stop_grace_secs", json!(-1)),
        "stop_grace_secs",
        Reason::Schema,
    );
    assert_ok(set("stop_grace_secs", json!(0)));
    assert_rejects(
        set("expires_at", json!(NOW - 1)),
        "expires_at",
        Reason::Expired,
    );
    assert_ok(set("expires_at", json!(NOW + 1)));
}

#[test]
fn manifest_too_large() {
    assert_rejects(
        set("description", json!("x".repeat(50 * 1024))),
        "(manifest)",
        Reason::ManifestTooLarge,
    );
    assert_ok(set("description", json!("x".repeat(40 * 1024))));
}

#[test]
fn typed_view_fills_defaults() {
    let mut m = base();
    m.insert("ports".into(), json!([{"container": 80, "host": 8080}]));
    let typed = AppManifest::from_raw(&m).unwrap();
    assert_eq!(typed.ports[0].bind, "127.0.0.1");
    assert_eq!(typed.ports[0].protocol, "tcp");
    assert_eq!(typed.stop_grace_secs, 30);
    assert!(!typed.security.read_only_root);
}

#[test]
fn yaml_and_json_parse_alike() {
    let yaml = "schema: archy.app/v1\nid: hello\nsize: 3\n";
    let json = r#"{"schema":"archy.app/v1","id":"hello","size":3}"#;
    assert_eq!(super::parse(yaml).unwrap(), super::parse(json).unwrap());
    assert!(matches!(super::parse("[1]"), Err(ParseError::NotObject(_))));
    assert!(matches!(super::parse("{\"a\":"), Err(ParseError::Json(_))));
}

/// Regression (found by the `manifest` fuzz target): manifests that pass every field rule but
/// that the orchestrator's spec check refuses must be refused here, naming the field.
#[test]
fn orchestrator_rules_are_checked_here_too() {
    let port = json!([{"container": 8080, "host": 18080}]);
    let hc = json!({"type": "tcp", "port": 8080});
    // A health check on a container port that `ports` does not publish.
    assert_rejects(
        set("health_check", hc.clone()),
        "health_check.port",
        Reason::Policy,
    );
    assert_ok(with(|m| {
        m.insert("ports".into(), port.clone());
        m.insert("health_check".into(), hc);
    }));
    // Podman's memory minimum.
    assert_rejects(
        set("resources", json!({"memory_mb": 1})),
        "resources.memory_mb",
        Reason::Policy,
    );
    assert_ok(set("resources", json!({"memory_mb": 6})));
    // A generated secret's variable that `env` would override.
    assert_rejects(
        with(|m| {
            m.insert("env".into(), json!({"TOKEN": "x"}));
            m.insert(
                "generated_secrets".into(),
                json!([{"name": "token", "kind": "hex32", "env": "TOKEN"}]),
            );
        }),
        "generated_secrets[0].env",
        Reason::Policy,
    );
}

/// Regression (found by the `release` fuzz target): a number outside the IEEE double range
/// (kept as text by serde_json's `arbitrary_precision`) is a violation, never a panic in JCS.
#[test]
fn out_of_range_numbers_are_violations_not_panics() {
    let huge: Value = serde_json::from_str("1900000001e3090").unwrap();
    assert_rejects(set("x-huge", huge.clone()), "x-huge", Reason::Schema);
    let mut m = base();
    m.insert("x-huge".into(), huge);
    let text = serde_json::to_string(&m).unwrap();
    assert!(!validate(&parse(&text).unwrap(), &PolicyConfig::default(), NOW).is_empty());
    // A signed-looking envelope whose `kid` matches: refused before any signature check.
    let did = base()["publisher"]["did"].as_str().unwrap().to_owned();
    let kid = crate::did::verification_method(&did);
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let env = crate::envelope::Envelope {
        manifest: m,
        signature: crate::jws::sign_detached(b"{}", &key, &kid),
    };
    let v = crate::envelope::verify_signature(&env).unwrap_err();
    assert_eq!((v.reason, v.rule), (Reason::Schema, "jcs"), "{v:?}");
}

fn layers() -> Value {
    json!({"blake3": "e".repeat(64), "size": 4096, "format": "oci-layers"})
}

#[test]
fn layered_images_need_v2_and_exactly_one_content() {
    let layered = |m: &mut Map<String, Value>| {
        m["schema"] = json!("archy.app/v2");
        let image = m["image"].as_object_mut().unwrap();
        image.remove("archive");
        image.insert("layers".into(), layers());
    };
    assert_ok(with(layered));
    let typed = {
        let mut m = base();
        layered(&mut m);
        AppManifest::from_raw(&m).unwrap()
    };
    assert!(matches!(typed.images()[0].content(), ImageContent::Layers(b) if b.size == 4096));
    assert_eq!(typed.images()[0].blob().format, "oci-layers");
    assert_rejects(
        with(|m| {
            layered(m);
            m["schema"] = json!("archy.app/v1");
        }),
        "image.layers",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| {
            m["image"]["layers"] = layers();
        }),
        "image",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| {
            m["image"].as_object_mut().unwrap().remove("archive");
        }),
        "image.archive",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| {
            layered(m);
            m["image"]["layers"]["format"] = json!("oci-archive");
        }),
        "image.layers.format",
        Reason::Schema,
    );
    assert_rejects(
        with(|m| m["image"]["archive"]["format"] = json!("oci-layers")),
        "image.archive.format",
        Reason::Schema,
    );
}

fn stack() -> Map<String, Value> {
    crate::testing::stack_manifest()
}

fn with_stack(f: impl FnOnce(&mut Map<String, Value>)) -> Vec<Violation> {
    let mut m = stack();
    f(&mut m);
    check(&m)
}

fn service(m: &mut Map<String, Value>, i: usize) -> &mut Map<String, Value> {
    m["services"][i].as_object_mut().unwrap()
}

#[test]
fn a_stack_passes_and_reads_as_its_services() {
    assert_ok(check(&stack()));
    let typed = AppManifest::from_raw(&stack()).unwrap();
    assert!(typed.is_stack() && typed.image.is_none());
    let services = typed.stack();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].depends_on, ["db"]);
    assert_eq!(services[1].secrets[0].env, "POSTGRES_PASSWORD");
    assert_eq!(typed.images().len(), 2);
    // The single-container form reads as one service named after the app, receiving every
    // generated secret.
    let mut single = base();
    single.insert(
        "generated_secrets".into(),
        json!([{"name": "tok", "kind": "hex16", "env": "TOKEN"}]),
    );
    let one = AppManifest::from_raw(&single).unwrap().stack();
    assert_eq!((one.len(), one[0].name.as_str()), (1, "hello-web"));
    assert_eq!(one[0].secrets[0].env, "TOKEN");
}

#[test]
fn hostile_stacks_are_refused_naming_the_field() {
    assert_rejects(
        with_stack(|m| {
            service(m, 1).insert("privileged".into(), json!(true));
        }),
        "services[1].privileged",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            service(m, 0).insert("network_mode".into(), json!("host"));
        }),
        "services[0].network_mode",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            let one = m["services"][1].clone();
            let list = m["services"].as_array_mut().unwrap();
            for i in 0..7 {
                let mut s = one.clone();
                s["name"] = json!(format!("db{i}"));
                s.as_object_mut().unwrap().remove("backup");
                list.push(s);
            }
        }),
        "services",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            service(m, 1).insert("depends_on".into(), json!(["web"]));
        }),
        "services[0].depends_on",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| {
            let ports: Vec<Value> = (0..archy_rules::MAX_PORTS)
                .map(|i| json!({"container": 5432, "host": 20000 + i}))
                .collect();
            service(m, 1).insert("ports".into(), json!(ports));
        }),
        "services",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            service(m, 1).insert(
                "ports".into(),
                json!([{"container": 5432, "host": 18090, "bind": "127.0.0.1"}]),
            );
        }),
        "services[1].ports[0].host",
        Reason::Policy,
    );
    // The same host port over udp, or on another address, is no clash.
    assert_ok(with_stack(|m| {
        service(m, 1).insert(
            "ports".into(),
            json!([{"container": 5432, "host": 18090, "protocol": "udp"}]),
        );
    }));
}

#[test]
fn stack_shape_rules() {
    assert_rejects(
        with_stack(|m| m["schema"] = json!("archy.app/v1")),
        "services",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| {
            m.insert("ports".into(), json!([]));
        }),
        "ports",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| {
            m.insert("image".into(), base()["image"].clone());
        }),
        "image",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| m["services"] = json!([])),
        "services",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["name"] = json!("web")),
        "services[1].name",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["name"] = json!("db-")),
        "services[1].name",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| {
            service(m, 1).remove("image");
        }),
        "services[1].image",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 0)["depends_on"] = json!(["cache"])),
        "services[0].depends_on[0]",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 0)["depends_on"] = json!(["web"])),
        "services[0].depends_on[0]",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["volumes"][0]["target"] = json!("/var/../etc")),
        "services[1].volumes[0].target",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| service(m, 0)["ports"][0]["host"] = json!(80)),
        "services[0].ports[0].host",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            service(m, 1).insert("security".into(), json!({"capabilities": ["NET_ADMIN"]}));
        }),
        "services[1].security.capabilities[0]",
        Reason::Policy,
    );
}

#[test]
fn stack_secrets_backup_exports_and_dependencies() {
    // Generated secrets name no variable with services; a service names its own.
    assert_rejects(
        with_stack(|m| m["generated_secrets"][0]["env"] = json!("X")),
        "generated_secrets[0].env",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 0)["secrets"][0]["name"] = json!("api-key")),
        "services[0].secrets[0].name",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 0)["env"]["DB_PASSWORD"] = json!("hunter2")),
        "services[0].secrets[0].env",
        Reason::Policy,
    );
    assert_rejects(
        with_stack(|m| {
            m.insert("secrets".into(), json!([]));
        }),
        "secrets",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["backup"]["output"] = json!("/tmp/dump.sql")),
        "services[1].backup.output",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["backup"]["output"] = json!("/var/lib/postgresql")),
        "services[1].backup.output",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| service(m, 1)["backup"]["volumes"] = json!(["other"])),
        "services[1].backup.volumes[0]",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| m["exports"] = json!(["cache"])),
        "exports[0]",
        Reason::Schema,
    );
    assert_rejects(
        with_stack(|m| {
            m.insert(
                "dependencies".into(),
                json!([{"app": "other", "version": "^1", "did": "did:key:nope"}]),
            );
        }),
        "dependencies[0].did",
        Reason::Schema,
    );
    let deps: Vec<Value> = (0..=archy_rules::MAX_DEPENDENCIES)
        .map(|i| json!({"app": format!("dep{i}"), "version": "^1"}))
        .collect();
    assert_rejects(
        set("dependencies", json!(deps)),
        "dependencies",
        Reason::Policy,
    );
    // In v1 `backup`, `exports` and `dependencies[].did` are unknown fields, ignored.
    assert_ok(with(|m| {
        m.insert("backup".into(), json!("anything"));
        m.insert("exports".into(), json!(7));
        m.insert(
            "dependencies".into(),
            json!([{"app": "other", "version": "^1", "did": 3}]),
        );
    }));
    // A v2 single-container app may carry a backup hook and export itself.
    assert_ok(with(|m| {
        m["schema"] = json!("archy.app/v2");
        m.insert(
            "volumes".into(),
            json!([{"name": "data", "target": "/data"}]),
        );
        m.insert(
            "backup".into(),
            json!({"command": ["sync"], "output": "/data/dump", "volumes": ["data"]}),
        );
        m.insert("exports".into(), json!(["hello-web"]));
    }));
    // A v2 single-container app keeps the v1 secret shape; `secrets` at the top is misplaced.
    assert_rejects(
        with(|m| {
            m["schema"] = json!("archy.app/v2");
            m.insert("secrets".into(), json!([{"name": "x", "env": "X"}]));
        }),
        "secrets",
        Reason::Schema,
    );
}
