use super::*;
use serde_json::json;

fn config(arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"os": "linux", "architecture": arch, "rootfs": {"type": "layers"}}))
        .unwrap()
}

fn host() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
    }
}

struct Img {
    manifest: Value,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

impl Img {
    fn new() -> Img {
        let config = config("amd64");
        let layers = vec![vec![1u8; 100], vec![2u8; 50]];
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(&config).as_str(), "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": OCI_LAYER_TAR, "digest": Digest::of(l).as_str(), "size": l.len()})).collect::<Vec<_>>(),
        });
        Img {
            manifest,
            config,
            layers,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.manifest).unwrap()
    }
    fn id(&self) -> String {
        Digest::of(&self.config).to_string()
    }
    fn total(&self) -> u64 {
        (self.bytes().len() + self.config.len() + self.layers.iter().map(Vec::len).sum::<usize>())
            as u64
    }
    fn plan(&self) -> Result<LayerPlan, LayerError> {
        LayerPlan::from_manifest(
            &self.bytes(),
            2 + self.layers.len(),
            &self.id(),
            self.total(),
        )
    }
}

fn check_of(r: Result<LayerPlan, LayerError>) -> (LayerCheck, Child) {
    let e = r.expect_err("should be refused");
    (e.check, e.child)
}

#[test]
fn an_honest_image_passes_every_check() {
    let img = Img::new();
    let plan = img.plan().unwrap();
    assert_eq!(plan.layers.len(), 2);
    assert_eq!(plan.manifest_digest, Digest::of(&img.bytes()));
    assert_eq!(plan.check_config(&img.config, &host()).unwrap(), host());
    for (i, l) in img.layers.iter().enumerate() {
        let mut s = Sha256Stream::default();
        s.update(l);
        plan.check_layer(i, s).unwrap();
    }
    assert_eq!(
        plan.blobs().map(|(i, _)| i).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn each_hostile_image_is_refused_naming_the_check_and_child() {
    let img = Img::new();
    // A child count that does not match.
    let r = LayerPlan::from_manifest(&img.bytes(), 3, &img.id(), img.total());
    assert_eq!(check_of(r), (LayerCheck::ChildCount, Child::Root));
    // A total size that does not match.
    let r = LayerPlan::from_manifest(&img.bytes(), 4, &img.id(), img.total() + 1);
    assert_eq!(check_of(r), (LayerCheck::ChildSize, Child::Root));
    // A config that is not image.id.
    let r = LayerPlan::from_manifest(
        &img.bytes(),
        4,
        &Digest::of(b"other").to_string(),
        img.total(),
    );
    assert_eq!(check_of(r), (LayerCheck::ConfigDigest, Child::Index(1)));
    // An image index instead of a manifest.
    let mut idx = Img::new();
    idx.manifest = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
    assert_eq!(
        check_of(idx.plan()),
        (LayerCheck::SinglePlatform, Child::Index(0))
    );
    let mut list = Img::new();
    list.manifest["manifests"] = json!([]);
    list.manifest.as_object_mut().unwrap().remove("mediaType");
    assert_eq!(
        check_of(list.plan()),
        (LayerCheck::SinglePlatform, Child::Index(0))
    );
    // A foreign layer, by urls or by type.
    let mut foreign = Img::new();
    foreign.manifest["layers"][1]["urls"] = json!(["https://example.com/layer"]);
    assert_eq!(
        check_of(foreign.plan()),
        (LayerCheck::ForeignLayer, Child::Index(3))
    );
    let mut nd = Img::new();
    nd.manifest["layers"][0]["mediaType"] =
        json!("application/vnd.oci.image.layer.nondistributable.v1.tar");
    assert_eq!(
        check_of(nd.plan()),
        (LayerCheck::ForeignLayer, Child::Index(2))
    );
    // An unknown layer type.
    let mut mt = Img::new();
    mt.manifest["layers"][0]["mediaType"] = json!("application/x-zip");
    assert_eq!(
        check_of(mt.plan()),
        (LayerCheck::MediaType, Child::Index(2))
    );
    // Too many layers (policy).
    let mut many = Img::new();
    let l = many.manifest["layers"][0].clone();
    many.manifest["layers"] = Value::Array(vec![l; MAX_LAYERS + 1]);
    let r = LayerPlan::from_manifest(&many.bytes(), 2 + MAX_LAYERS + 1, &many.id(), 0);
    assert_eq!(check_of(r).0, LayerCheck::LayerCount);
    assert_eq!(LayerCheck::LayerCount.class(), "policy");
    // Not JSON at all.
    let r = LayerPlan::from_manifest(b"\x00garbage", 4, &img.id(), 0);
    assert_eq!(check_of(r), (LayerCheck::Manifest, Child::Index(0)));
}

#[test]
fn config_and_layer_bytes_are_checked_against_the_manifest() {
    let img = Img::new();
    let plan = img.plan().unwrap();
    let e = plan.check_config(&config("arm64"), &host()).unwrap_err();
    // Another architecture's config differs in size or digest from the signed one; a
    // publisher that signs an arm64 config as image.id gets the platform check.
    assert!(
        matches!(e.check, LayerCheck::ChildSize | LayerCheck::ConfigDigest),
        "{e}"
    );
    let mut arm = Img::new();
    arm.config = config("arm64");
    arm.manifest["config"]["digest"] = json!(arm.id());
    let plan_arm = arm.plan().unwrap();
    let e = plan_arm.check_config(&arm.config, &host()).unwrap_err();
    assert_eq!((e.check, e.child), (LayerCheck::Platform, Child::Index(1)));
    assert!(e.to_string().contains("linux/arm64"), "{e}");
    // A layer whose bytes are not its digest.
    let mut s = Sha256Stream::default();
    s.update(&[9u8; 100]);
    let e = plan.check_layer(0, s).unwrap_err();
    assert_eq!(
        (e.check, e.child),
        (LayerCheck::LayerDigest, Child::Index(2))
    );
    let mut short = Sha256Stream::default();
    short.update(&[1u8; 99]);
    assert_eq!(
        plan.check_layer(0, short).unwrap_err().check,
        LayerCheck::ChildSize
    );
}

#[test]
fn root_sizes() {
    assert_eq!(LayerPlan::check_root_size(64).unwrap(), 2);
    assert_eq!(LayerPlan::check_root_size(32 * 129).unwrap(), 129);
    for bad in [0, 32, 65, 32 * 130] {
        assert!(LayerPlan::check_root_size(bad).is_err(), "{bad}");
    }
}
