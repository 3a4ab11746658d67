//! Names and labels of every Podman object the orchestrator creates (pure).
//!
//! **Injective by construction.** A name is `archy` followed by its parts, each joined with `_`:
//! container `archy_<app>` (a stack's service: `archy_<app>_<service>`), volume
//! `archy_<app>_<volume>`, secret `archy_<app>_<secret>`, network `archy_<app>`. App ids (`^[a-z][a-z0-9-]{1,62}$`), volume names and secret names
//! (`^[a-z][a-z0-9-]*$`) cannot contain `_`, so [`parse`] splits a name back into exactly the
//! parts it was made of: two different (app, part) pairs never share a name. (The names before
//! this scheme joined with `-`, which ids contain: app `foo` volume `bar-data` and app `foo-bar`
//! volume `data` both became `archy-foo-bar-data`. Those [`legacy`] names are only read, by the
//! migration.)
//!
//! **Labelled with their owner.** A name says which app an object is for, not whose data it
//! holds: every object is created with [`labels`] naming its app's publisher and id, its role and
//! the node that made it, and is checked against them ([`check_owner`]) before it is adopted,
//! mounted or reused.

use std::collections::HashMap;

/// First part of every name; the namespace the node keeps for itself.
pub const PREFIX: &str = "archy";
/// Joins the parts of a name. Never part of an app id, a volume name or a secret name.
pub const SEP: char = '_';

/// Label: the app id.
pub const LABEL_APP: &str = "archy.app";
/// Label: the app's publisher (the node passes the publisher's DID; opaque here).
pub const LABEL_PUBLISHER: &str = "archy.publisher";
/// Label: what the object is to its app ([`Role`]).
pub const LABEL_ROLE: &str = "archy.role";
/// Label: which orchestrator instance (node) created the object.
pub const LABEL_OWNER: &str = "archy.owner";

/// The kinds of object; Podman keeps a separate namespace for each.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Container,
    Volume,
    Secret,
    Network,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Container => "container",
            Role::Volume => "volume",
            Role::Secret => "secret",
            Role::Network => "network",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "container" => Role::Container,
            "volume" => Role::Volume,
            "secret" => Role::Secret,
            "network" => Role::Network,
            _ => return None,
        })
    }
}

/// What a name stands for: an app, and for volumes and secrets the app's own name for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub role: Role,
    pub app: String,
    /// The volume's or secret's name inside the app, or a stack's service for a container;
    /// `None` for a single-container app's container and for networks.
    pub part: Option<String>,
}

impl ObjectName {
    pub fn container(app: &str) -> Self {
        ObjectName {
            role: Role::Container,
            app: app.into(),
            part: None,
        }
    }

    /// The container of one service of a stack (PROTOCOL §2.2): `archy_<app>_<service>`.
    /// Service names are `^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`, so without [`SEP`] too.
    pub fn service(app: &str, service: &str) -> Self {
        ObjectName {
            role: Role::Container,
            app: app.into(),
            part: Some(service.into()),
        }
    }

    pub fn volume(app: &str, volume: &str) -> Self {
        ObjectName {
            role: Role::Volume,
            app: app.into(),
            part: Some(volume.into()),
        }
    }

    pub fn secret(app: &str, secret: &str) -> Self {
        ObjectName {
            role: Role::Secret,
            app: app.into(),
            part: Some(secret.into()),
        }
    }

    pub fn network(app: &str) -> Self {
        ObjectName {
            role: Role::Network,
            app: app.into(),
            part: None,
        }
    }

    /// The Podman name.
    pub fn render(&self) -> String {
        let mut s = format!("{PREFIX}{SEP}{}", self.app);
        if let Some(p) = &self.part {
            s.push(SEP);
            s.push_str(p);
        }
        s
    }
}

/// `^[a-z][a-z0-9-]*$` and at most 63 bytes (the rule book's part name): what app ids and
/// part names share. It excludes
/// [`SEP`], which is what makes [`parse`] the inverse of [`ObjectName::render`].
pub fn is_part(s: &str) -> bool {
    archy_rules::is_part_name(s)
}

/// The inverse of [`ObjectName::render`] for a name Podman reports in the namespace of `role`;
/// `None` for a name this scheme never makes.
pub fn parse(role: Role, name: &str) -> Option<ObjectName> {
    let mut parts = name.split(SEP);
    if parts.next()? != PREFIX {
        return None;
    }
    let app = parts.next().filter(|a| is_part(a))?;
    let part = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let needs_part = matches!(role, Role::Volume | Role::Secret);
    let may_have_part = needs_part || role == Role::Container;
    match part {
        Some(p) if may_have_part && is_part(p) => Some(ObjectName {
            role,
            app: app.into(),
            part: Some(p.into()),
        }),
        None if !needs_part => Some(ObjectName {
            role,
            app: app.into(),
            part: None,
        }),
        _ => None,
    }
}

/// Container name of an app.
pub fn container(app: &str) -> String {
    ObjectName::container(app).render()
}

/// Container name of one service of a stack.
pub fn service_container(app: &str, service: &str) -> String {
    ObjectName::service(app, service).render()
}

/// Network name of an app: every container of a stack joins it, named by its service.
pub fn network(app: &str) -> String {
    ObjectName::network(app).render()
}

/// Volume name of one of an app's volumes: outlives the container, removed only by a purge.
pub fn volume(app: &str, volume: &str) -> String {
    ObjectName::volume(app, volume).render()
}

/// Name of the Podman secret holding one of an app's generated secrets.
pub fn secret(app: &str, secret: &str) -> String {
    ObjectName::secret(app, secret).render()
}

/// The names of the code before this scheme (`-` joined: not injective). Read only by the
/// migration and the audit; nothing new is ever created under them.
pub mod legacy {
    /// `archy-<app>`
    pub fn container(app: &str) -> String {
        format!("archy-{app}")
    }
    /// `archy-<app>-<volume>`
    pub fn volume(app: &str, volume: &str) -> String {
        format!("archy-{app}-{volume}")
    }
    /// `archy-<app>-<secret>`
    pub fn secret(app: &str, secret: &str) -> String {
        format!("archy-{app}-{secret}")
    }
    /// Could this be a name of the old scheme?
    pub fn looks_like(name: &str) -> bool {
        name.strip_prefix("archy-").is_some_and(super::is_part)
    }
}

/// Who an object belongs to, as its labels say.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub app: Option<String>,
    pub publisher: Option<String>,
    pub role: Option<String>,
    pub node: Option<String>,
}

impl Owner {
    pub fn from_labels(labels: &HashMap<String, String>) -> Self {
        Owner {
            app: labels.get(LABEL_APP).cloned(),
            publisher: labels.get(LABEL_PUBLISHER).cloned(),
            role: labels.get(LABEL_ROLE).cloned(),
            node: labels.get(LABEL_OWNER).cloned(),
        }
    }

    /// "app `x` of publisher P (node N)", or "nobody (no archy labels)".
    pub fn describe(&self) -> String {
        if self.app.is_none() && self.publisher.is_none() && self.node.is_none() {
            return "nobody Archy knows (it has no archy labels)".into();
        }
        let or_q = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        format!(
            "app `{}` of publisher {} (node {})",
            or_q(&self.app),
            or_q(&self.publisher),
            or_q(&self.node)
        )
    }
}

/// The labels an object of `role` for (`publisher`, `app`) is created with, as `--label`
/// values, in a fixed order.
pub fn labels(role: Role, app: &str, publisher: &str, node: &str) -> Vec<String> {
    vec![
        format!("{LABEL_APP}={app}"),
        format!("{LABEL_PUBLISHER}={publisher}"),
        format!("{LABEL_ROLE}={}", role.as_str()),
        format!("{LABEL_OWNER}={node}"),
    ]
}

/// Is an existing object, found under the name of `want`, really that app's? The error text
/// names both owners.
pub fn check_owner(
    name: &str,
    want: &ObjectName,
    publisher: &str,
    node: &str,
    found: &Owner,
) -> Result<(), String> {
    let expected = Owner {
        app: Some(want.app.clone()),
        publisher: Some(publisher.into()),
        role: Some(want.role.as_str().into()),
        node: Some(node.into()),
    };
    if *found == expected {
        return Ok(());
    }
    Err(format!(
        "Podman {} `{name}` belongs to {}, not to {}: it is neither mounted nor reused; \
         remove it or uninstall its app with --purge (see `archy apps audit`)",
        want.role.as_str(),
        found.describe(),
        expected.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_old_collisions_get_distinct_names() {
        // Issue 13: these pairs shared one Podman object under the old scheme.
        assert_eq!(
            legacy::volume("foo", "bar-data"),
            legacy::volume("foo-bar", "data")
        );
        assert_eq!(
            legacy::secret("foo", "bar-key"),
            legacy::secret("foo-bar", "key")
        );
        assert_ne!(volume("foo", "bar-data"), volume("foo-bar", "data"));
        assert_ne!(secret("foo", "bar-key"), secret("foo-bar", "key"));
        assert_eq!(volume("foo", "bar-data"), "archy_foo_bar-data");
        assert_eq!(volume("foo-bar", "data"), "archy_foo-bar_data");
        for (app, part) in [
            ("foo", "bar-data"),
            ("foo-bar", "data"),
            ("a-", "b-"),
            ("a", "b-c-d"),
        ] {
            let v = ObjectName::volume(app, part);
            assert_eq!(parse(Role::Volume, &v.render()), Some(v.clone()));
        }
    }

    #[test]
    fn names_outside_the_scheme_do_not_parse() {
        for (role, name) in [
            (Role::Volume, "archy_foo"),
            (Role::Volume, "archy_foo_bar_baz"),
            (Role::Volume, "archy-foo-bar"),
            (Role::Volume, "archy__x"),
            (Role::Volume, "archy_Foo_x"),
            (Role::Container, "archy_foo_x_y"),
            (Role::Network, "archy_foo_x"),
            (Role::Container, "other_foo"),
            (Role::Secret, "archy_foo_"),
            (Role::Network, ""),
        ] {
            assert_eq!(parse(role, name), None, "{name}");
        }
        assert_eq!(
            parse(Role::Container, "archy_foo"),
            Some(ObjectName::container("foo"))
        );
        // A stack's service container (PROTOCOL §2.2).
        assert_eq!(
            parse(Role::Container, "archy_foo_db"),
            Some(ObjectName::service("foo", "db"))
        );
        assert_eq!(
            parse(Role::Network, "archy_foo"),
            Some(ObjectName::network("foo"))
        );
    }

    #[test]
    fn owner_mismatch_names_both_owners() {
        let want = ObjectName::volume("hello", "data");
        let mut map = HashMap::new();
        for l in labels(Role::Volume, "hello", "did:key:zA", "node-1") {
            let (k, v) = l.split_once('=').unwrap();
            map.insert(k.to_string(), v.to_string());
        }
        let found = Owner::from_labels(&map);
        assert!(check_owner("archy_hello_data", &want, "did:key:zA", "node-1", &found).is_ok());
        let err =
            check_owner("archy_hello_data", &want, "did:key:zB", "node-1", &found).unwrap_err();
        assert!(
            err.contains("did:key:zA") && err.contains("did:key:zB"),
            "{err}"
        );
        let err = check_owner(
            "archy_hello_data",
            &want,
            "did:key:zA",
            "node-1",
            &Owner::default(),
        )
        .unwrap_err();
        assert!(err.contains("no archy labels"), "{err}");
    }

    fn part() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,20}"
    }

    proptest! {
        #[test]
        fn parse_inverts_render(app in part(), p in part(), q in part(), app2 in part()) {
            for name in [ObjectName::volume(&app, &p), ObjectName::secret(&app, &p)] {
                prop_assert_eq!(parse(name.role, &name.render()), Some(name.clone()));
            }
            prop_assert_eq!(parse(Role::Container, &container(&app)), Some(ObjectName::container(&app)));
            // Injective: different pairs, different names.
            if (app.as_str(), p.as_str()) != (app2.as_str(), q.as_str()) {
                prop_assert_ne!(volume(&app, &p), volume(&app2, &q));
            }
        }
    }
}
