//! Fixtures for tests in other crates (feature `testing`).

use serde_json::{json, Map, Value};

/// A valid v1 manifest (every required field, nothing optional), as a raw object.
pub fn manifest() -> Map<String, Value> {
    let v = json!({
        "schema": "archy.app/v1",
        "id": "hello-web",
        "version": "1.2.3",
        "name": "Hello",
        "summary": "A test app",
        "publisher": {
            "did": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "nostr": "a".repeat(64)
        },
        "origin": {"endpoint": "b".repeat(64), "addrs": ["127.0.0.1:4433", "[::1]:4433"]},
        "image": {
            "name": "localhost/acme/web:1.2.0",
            "id": format!("sha256:{}", "c".repeat(64)),
            "archive": {"blake3": "d".repeat(64), "size": 1024, "format": "oci-archive"}
        },
        "published_at": 1_700_000_000u64
    });
    v.as_object().unwrap().clone()
}

/// A valid v2 stack (PROTOCOL §2.2): a web service and its PostgreSQL database, a generated
/// password both receive, a backup hook, the database exported.
pub fn stack_manifest() -> Map<String, Value> {
    let mut m = manifest();
    m["schema"] = json!("archy.app/v2");
    m["id"] = json!("notes-pg");
    m.remove("image");
    let image = |name: &str, c: char| json!({"name": name, "id": format!("sha256:{}", c.to_string().repeat(64)), "layers": {"blake3": c.to_string().repeat(64), "size": 4096, "format": "oci-layers"}});
    m.insert(
        "generated_secrets".into(),
        json!([{"name": "db-password", "kind": "hex32"}]),
    );
    m.insert(
        "services".into(),
        json!([
            {"name": "web", "image": image("localhost/acme/notes-web:1.0.0", 'a'),
             "ports": [{"container": 8080, "host": 18090}],
             "env": {"DB_HOST": "db"},
             "secrets": [{"name": "db-password", "env": "DB_PASSWORD"}],
             "depends_on": ["db"],
             "health_check": {"type": "http", "port": 8080, "path": "/"}},
            {"name": "db", "image": image("localhost/acme/postgres:15", 'b'),
             "volumes": [{"name": "pgdata", "target": "/var/lib/postgresql"}],
             "secrets": [{"name": "db-password", "env": "POSTGRES_PASSWORD"}],
             "health_check": {"type": "exec", "command": ["pg_isready"]},
             "backup": {"command": ["pg_dump", "-f", "/var/lib/postgresql/dump.sql"],
                        "output": "/var/lib/postgresql/dump.sql",
                        "restore": ["psql", "-f", "/var/lib/postgresql/dump.sql"]}}
        ]),
    );
    m.insert("exports".into(), json!(["db"]));
    m
}
