//! The bundles of `policies/bundles/`, compiled into the binary so that the demo and the tests
//! run from any directory. `passerelle policy check policies/bundles/*.toml` checks the same
//! files on disk.

/// (file name, text) of every seed bundle.
pub const BUNDLES: &[(&str, &str)] = &[
    ("organisations.toml", include_str!("../bundles/organisations.toml")),
    ("associations.toml", include_str!("../bundles/associations.toml")),
    ("div.toml", include_str!("../bundles/div.toml")),
    ("flemish-sources.toml", include_str!("../bundles/flemish-sources.toml")),
    ("lra.toml", include_str!("../bundles/lra.toml")),
    ("sigedis.toml", include_str!("../bundles/sigedis.toml")),
    ("spf-finances.toml", include_str!("../bundles/spf-finances.toml")),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_bundle_file_is_embedded_and_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles");
        let on_disk = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(on_disk, super::BUNDLES.len(), "a bundle file is missing from seed::BUNDLES");
        if let Err(e) = crate::bundle::load_texts(super::BUNDLES.iter().copied()) {
            panic!("{e}");
        }
    }
}
