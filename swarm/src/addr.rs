//! [`PeerAddr`]: how one node tells another where to dial it, and the blob-hash helpers.
//!
//! The compact form `<64-hex endpoint id>@ip:port,ip:port` is what the CLI prints for
//! `archy blob serve` and accepts for `--from`; the addresses may be omitted (`<hex>`) when
//! iroh's discovery can find the endpoint (internet mode).

use std::{fmt, net::SocketAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::SwarmError;

/// A dialable peer: its iroh endpoint id (64 hex chars, an Ed25519 public key) and direct
/// socket addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    pub endpoint: String,
    pub addrs: Vec<SocketAddr>,
}

impl PeerAddr {
    /// Validates the endpoint id so a typo fails here, not at dial time.
    pub fn new(endpoint: &str, addrs: Vec<SocketAddr>) -> Result<Self, SwarmError> {
        parse_endpoint_id(endpoint)?;
        Ok(PeerAddr {
            endpoint: endpoint.to_ascii_lowercase(),
            addrs,
        })
    }

    /// The iroh address to dial.
    pub fn to_endpoint_addr(&self) -> Result<iroh::EndpointAddr, SwarmError> {
        let id = parse_endpoint_id(&self.endpoint)?;
        let mut addr = iroh::EndpointAddr::new(id);
        for a in &self.addrs {
            addr = addr.with_ip_addr(*a);
        }
        Ok(addr)
    }

    pub(crate) fn from_endpoint_addr(addr: &iroh::EndpointAddr) -> Self {
        PeerAddr {
            endpoint: addr.id.to_string(),
            addrs: addr.ip_addrs().copied().collect(),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)?;
        for (i, a) in self.addrs.iter().enumerate() {
            f.write_str(if i == 0 { "@" } else { "," })?;
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl FromStr for PeerAddr {
    type Err = SwarmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) => (id, Some(rest)),
            None => (s, None),
        };
        let mut addrs = Vec::new();
        if let Some(rest) = rest {
            for part in rest.split(',').filter(|p| !p.is_empty()) {
                let a = part
                    .parse::<SocketAddr>()
                    .map_err(|e| SwarmError::InvalidPeerAddr {
                        input: s.to_string(),
                        reason: format!("`{part}` is not ip:port ({e})"),
                    })?;
                addrs.push(a);
            }
        }
        PeerAddr::new(id, addrs).map_err(|e| SwarmError::InvalidPeerAddr {
            input: s.to_string(),
            reason: e.to_string(),
        })
    }
}

pub(crate) fn parse_endpoint_id(s: &str) -> Result<iroh::EndpointId, SwarmError> {
    let invalid = |reason: &str| SwarmError::InvalidEndpointId {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    let bytes = hex::decode(s).map_err(|_| invalid("expected 64 hex characters"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid("expected 64 hex characters (32 bytes)"))?;
    iroh::EndpointId::from_bytes(&bytes).map_err(|_| invalid("not a valid Ed25519 public key"))
}

/// Parses a 64-hex BLAKE3 hash (the form manifests and the CLI use).
pub fn parse_hash(s: &str) -> Result<iroh_blobs::Hash, SwarmError> {
    let invalid = || SwarmError::InvalidHash {
        input: s.to_string(),
    };
    let bytes = hex::decode(s).map_err(|_| invalid())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
    Ok(iroh_blobs::Hash::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        iroh::SecretKey::from_bytes(&[7u8; 32]).public().to_string()
    }

    #[test]
    fn round_trip_with_and_without_addrs() {
        let p = PeerAddr::new(
            &id(),
            vec![
                "127.0.0.1:4000".parse().unwrap(),
                "[::1]:4001".parse().unwrap(),
            ],
        )
        .unwrap();
        let s = p.to_string();
        assert_eq!(s, format!("{}@127.0.0.1:4000,[::1]:4001", id()));
        assert_eq!(s.parse::<PeerAddr>().unwrap(), p);
        let bare: PeerAddr = id().parse().unwrap();
        assert!(bare.addrs.is_empty());
        assert_eq!(bare.to_string(), id());
        let ea = p.to_endpoint_addr().unwrap();
        assert_eq!(PeerAddr::from_endpoint_addr(&ea).endpoint, p.endpoint);
    }

    #[test]
    fn rejects_bad_input_naming_the_problem() {
        let e = "abcd@127.0.0.1:1".parse::<PeerAddr>().unwrap_err();
        assert!(e.to_string().contains("64 hex"), "{e}");
        let e = format!("{}@localhost:1", id())
            .parse::<PeerAddr>()
            .unwrap_err();
        assert!(e.to_string().contains("localhost:1"), "{e}");
        assert!(parse_hash("zz").is_err());
        let h = blake3::hash(b"x").to_hex().to_string();
        assert_eq!(parse_hash(&h).unwrap().to_hex(), h);
    }
}
