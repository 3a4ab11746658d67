//! The node's OCI registry: the images it holds, pull-only, on loopback (issue 15; PROTOCOL
//! §2.1). Podman pulls an app's image from here by digest, so Podman checks every sha256
//! itself; any OCI client (skopeo, another Podman) can pull any image the node holds. Requests
//! are classified by `archy_oci::registry` (pure, fuzzed); this file only looks digests up in
//! an index and streams bytes out of the blob store.
//!
//! The index maps sha256 digests to blobs of the store. It holds only what passed §2.1: an
//! image is added after its checks (fetched) or when this node made it (published), and is
//! rebuilt at start from the checked roots the store keeps ([`Swarm::hashseq_roots`]: own
//! ones, and fetched ones tagged only once their checks passed; never, say, a `sendme`
//! collection).

use anyhow::{bail, Context, Result};
use archy_oci::registry::{self, Method, RegistryError, Route};
use archy_oci::{Digest, LayerPlan};
use archy_swarm::{Hash, StoreReader, Swarm};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// One digest the registry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    hash: Hash,
    size: u64,
    media_type: String,
    manifest: bool,
}

#[derive(Debug, Default)]
struct Index(HashMap<Digest, Entry>);

impl Index {
    fn insert(&mut self, plan: &LayerPlan, children: &[Hash]) {
        if let Some(h) = children.first() {
            self.0.insert(
                plan.manifest_digest.clone(),
                Entry {
                    hash: *h,
                    size: plan.manifest_size,
                    media_type: plan.manifest_media_type.clone(),
                    manifest: true,
                },
            );
        }
        for (i, d) in plan.blobs() {
            if let Some(h) = children.get(i) {
                // Two checked images naming one digest hold the same bytes (sha256): either
                // entry serves them.
                self.0.insert(
                    d.digest.clone(),
                    Entry {
                        hash: *h,
                        size: d.size,
                        media_type: d.media_type.clone(),
                        manifest: false,
                    },
                );
            }
        }
    }
}

/// A running registry: its address and its index.
#[derive(Debug, Clone)]
pub struct Registry {
    addr: SocketAddr,
    index: Arc<RwLock<Index>>,
}

/// The repository name a node pulls an app's image under (any name reaches any image; this
/// one makes Podman's records readable).
pub fn repository(app: &str) -> String {
    format!("archy/{app}")
}

impl Registry {
    /// Binds `bind` (loopback only) and serves the store through `reader`.
    pub async fn start(bind: SocketAddr, reader: StoreReader) -> Result<Registry> {
        if !bind.ip().is_loopback() {
            bail!("[registry] bind {bind} is not a loopback address: the registry never listens beyond this machine");
        }
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding the OCI registry on {bind}"))?;
        let addr = listener.local_addr()?;
        let index = Arc::new(RwLock::new(Index::default()));
        let state = (index.clone(), reader);
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (index, reader) = state.clone();
            async move { serve(&index, &reader, req).await }
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the OCI registry stopped: {e}");
            }
        });
        tracing::info!(%addr, "OCI registry (pull-only) listening");
        Ok(Registry { addr, index })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `<addr>/archy/<app>@<manifest digest>`: what Podman pulls.
    pub fn reference(&self, app: &str, manifest: &Digest) -> String {
        format!("{}/{}@{manifest}", self.addr, repository(app))
    }

    /// Serves an image whose checks passed: child `i` of the HashSeq is `children[i]`.
    pub fn add_image(&self, plan: &LayerPlan, children: &[Hash]) {
        self.index
            .write()
            .expect("registry index lock")
            .insert(plan, children);
    }

    /// Forgets everything and re-reads the images the store keeps (at start, and after a GC).
    pub async fn reindex(&self, swarm: &Swarm) -> Result<usize> {
        let mut fresh = Index::default();
        let mut images = 0;
        for (root, _own) in swarm.hashseq_roots().await? {
            match held_plan(swarm, &root).await {
                Ok((plan, children)) => {
                    fresh.insert(&plan, &children);
                    images += 1;
                }
                Err(e) => tracing::debug!(%root, "not an image the registry serves: {e:#}"),
            }
        }
        *self.index.write().expect("registry index lock") = fresh;
        Ok(images)
    }
}

/// The plan and children of a layered image held complete in the store.
pub async fn held_plan(swarm: &Swarm, root: &str) -> Result<(LayerPlan, Vec<Hash>)> {
    let children = swarm.hashseq_children(root).await?;
    let first = children.first().context("an empty HashSeq")?.to_hex();
    let size = swarm.blob_info(&first).await?.size;
    if size > archy_oci::image::MAX_META_BYTES {
        bail!("child 0 is {size} bytes, more than an image manifest may be");
    }
    let manifest = swarm.read_bytes(&first).await?;
    let plan = LayerPlan::from_held(&manifest, children.len())?;
    Ok((plan, children))
}

fn error(e: &RegistryError, head: bool) -> Response {
    let body = if head {
        Body::empty()
    } else {
        Body::from(e.body())
    };
    Response::builder()
        .status(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response")
}

fn range_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::RANGE).and_then(|v| v.to_str().ok())
}

async fn serve(index: &RwLock<Index>, reader: &StoreReader, req: Request<Body>) -> Response {
    let head = req.method() == axum::http::Method::HEAD;
    let (method, route) = match registry::route(req.method().as_str(), req.uri().path()) {
        Ok(r) => r,
        Err(e) => return error(&e, head),
    };
    let api_version = HeaderValue::from_static("registry/2.0");
    let (digest, want_manifest) = match route {
        Route::Base => {
            return Response::builder()
                .header("Docker-Distribution-API-Version", api_version)
                .header(header::CONTENT_TYPE, "application/json")
                .body(if head {
                    Body::empty()
                } else {
                    Body::from("{}")
                })
                .expect("a valid response")
        }
        Route::Manifest { digest, .. } => (digest, true),
        Route::Blob { digest, .. } => (digest, false),
    };
    let entry = index
        .read()
        .expect("registry index lock")
        .0
        .get(&digest)
        .cloned();
    let Some(entry) = entry.filter(|e| e.manifest || !want_manifest) else {
        let e = if want_manifest {
            RegistryError::manifest_unknown(&digest)
        } else {
            RegistryError::blob_unknown(&digest)
        };
        return error(&e, head);
    };
    if reader.complete_size(entry.hash).await != Some(entry.size) {
        // Indexed but gone from the store (a GC since): unknown, not an error of ours.
        return error(&RegistryError::blob_unknown(&digest), head);
    }
    let range = if want_manifest {
        None
    } else {
        match registry::parse_range(range_header(req.headers()), entry.size) {
            Ok(r) => r,
            Err(e) => {
                let mut resp = error(&e, head);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", entry.size)) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        }
    };
    let (start, end) = range.map_or((0, entry.size), |r| (r.start, r.end));
    let content_type = if want_manifest {
        entry.media_type.as_str()
    } else {
        "application/octet-stream"
    };
    let mut resp = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header("Docker-Distribution-API-Version", api_version)
        .header("Docker-Content-Digest", digest.as_str())
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ETAG, format!("\"{digest}\""));
    if !want_manifest {
        resp = resp.header(header::ACCEPT_RANGES, "bytes");
    }
    if let Some(r) = range {
        resp = resp.header(header::CONTENT_RANGE, r.content_range(entry.size));
    }
    let body = if method == Method::Head || start == end {
        Body::empty()
    } else {
        Body::from_stream(reader.read_range(entry.hash, start, end))
    };
    resp.body(body).expect("a valid response")
}
