//! Interoperability with iroh's own tools (`sendme`): their tickets name a collection (a
//! HashSeq of a metadata blob plus one blob per file). This lets an Archy node fetch what
//! `sendme send` shares, and share files in a form `sendme receive` accepts.

use std::{path::Path, time::Duration};

use iroh_blobs::{format::collection::Collection, ticket::BlobTicket, BlobFormat, HashAndFormat};

use crate::{addr::parse_hash, BlobInfo, PeerAddr, Swarm, SwarmError};

/// A parsed iroh-blobs ticket (`blob...`): who serves it, the root hash, and whether it is a
/// collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub peer: PeerAddr,
    pub hash: String,
    pub collection: bool,
}

impl Ticket {
    pub fn parse(s: &str) -> Result<Ticket, SwarmError> {
        let t: BlobTicket = s.trim().parse().map_err(|e| SwarmError::InvalidTicket {
            reason: format!("{e}"),
        })?;
        Ok(Ticket {
            peer: PeerAddr::from_endpoint_addr(t.addr()),
            hash: t.hash().to_hex(),
            collection: t.format() == BlobFormat::HashSeq,
        })
    }
}

impl Swarm {
    /// Fetches a whole collection (root, metadata and every member) from one peer, verified
    /// like any fetch, and returns its (name, blob) entries. Missing ranges only are requested.
    pub async fn fetch_collection(
        &self,
        root: &str,
        from: &PeerAddr,
        timeout: Duration,
    ) -> Result<Vec<(String, BlobInfo)>, SwarmError> {
        let h = parse_hash(root)?;
        let addr = from.to_endpoint_addr()?;
        let unreachable = |reason: String| SwarmError::Store {
            op: "fetching a collection",
            reason: format!("peer {from}: {reason}"),
        };
        let conn = tokio::time::timeout(timeout, self.endpoint.connect(addr, iroh_blobs::ALPN))
            .await
            .map_err(|_| unreachable("no answer within the timeout".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(
            timeout.max(Duration::from_secs(60)),
            self.store
                .remote()
                .fetch(conn.clone(), HashAndFormat::hash_seq(h))
                .complete(),
        )
        .await
        .map_err(|_| unreachable("transfer did not finish in time".into()))?
        .map_err(|e| unreachable(format!("{e:#}")))?;
        conn.close(0u32.into(), b"done");
        self.keep_fetched(HashAndFormat::hash_seq(h)).await?;
        let collection = Collection::load(h, &*self.store)
            .await
            .map_err(|e| SwarmError::store("reading a collection", e))?;
        let mut out = Vec::new();
        for (name, hash) in collection.iter() {
            out.push((name.clone(), self.info(*hash).await?));
        }
        Ok(out)
    }

    /// Shares local blobs as a named collection and returns a ticket `sendme receive` accepts.
    pub async fn share_collection(
        &self,
        entries: &[(String, String)],
    ) -> Result<String, SwarmError> {
        let mut c = Collection::default();
        for (name, hash) in entries {
            let h = parse_hash(hash)?;
            self.info(h).await?;
            c.push(name.clone(), h);
        }
        let tt = c
            .store(&self.store)
            .await
            .map_err(|e| SwarmError::store("storing a collection", e))?;
        let root = tt.hash();
        // Published by us: the root is served, and with it the members it names.
        self.keep_own(HashAndFormat::hash_seq(root)).await?;
        let addr = self.addr().to_endpoint_addr()?;
        Ok(BlobTicket::new(addr, root, BlobFormat::HashSeq).to_string())
    }

    /// Convenience for the CLI: writes every member of a fetched collection into `dir`.
    pub async fn export_collection(
        &self,
        entries: &[(String, BlobInfo)],
        dir: &Path,
    ) -> Result<(), SwarmError> {
        for (name, info) in entries {
            let safe = Path::new(name);
            if safe.is_absolute()
                || safe
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(SwarmError::InvalidTicket {
                    reason: format!("collection entry name `{name}` is not a plain relative path"),
                });
            }
            self.export(&info.hash, &dir.join(safe)).await?;
        }
        Ok(())
    }
}
