//! (pure) Image name -> local binary. The process kubelet pulls nothing: each image repository
//! it may run maps to a binary on this machine (`--image-map repo=/path,...`); the tag and digest
//! are ignored. Any other image fails the container with `ErrImageNeverPull`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;

#[derive(Debug, Clone, Default)]
pub struct ImageMap(BTreeMap<String, PathBuf>);

impl ImageMap {
    /// Parses `repo=/path` entries (each may itself be a comma-separated list).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        let mut map = BTreeMap::new();
        for entry in entries.iter().flat_map(|e| e.as_ref().split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some((repo, path)) = entry.split_once('=') else {
                bail!("--image-map {entry:?}: expected REPOSITORY=/path/to/binary");
            };
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                bail!("--image-map {entry:?}: the binary path must be absolute");
            }
            map.insert(repository(repo).to_owned(), path);
        }
        Ok(ImageMap(map))
    }

    /// The binary for an image, by repository.
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        self.0.get(repository(image)).map(PathBuf::as_path)
    }
}

/// `registry/name:tag@sha256:...` -> `registry/name` (a `:` before the last `/` is a port).
pub fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn repository_drops_tag_and_digest_but_keeps_registry_port() {
        assert_eq!(
            repository("ghcr.io/replicated-dev/rc-node:0.1.0"),
            "ghcr.io/replicated-dev/rc-node"
        );
        assert_eq!(
            repository("localhost:5000/rc-node@sha256:abc"),
            "localhost:5000/rc-node"
        );
        assert_eq!(repository("rc-node"), "rc-node");
    }

    #[test]
    fn images_resolve_by_repository_whatever_the_tag() {
        let map =
            ImageMap::parse(&["ghcr.io/x/rc-node=/bin/rc-node,ghcr.io/x/rc-operator:1=/bin/op"])
                .unwrap();
        assert_eq!(
            map.resolve("ghcr.io/x/rc-node:9.9"),
            Some(Path::new("/bin/rc-node"))
        );
        assert_eq!(
            map.resolve("ghcr.io/x/rc-operator"),
            Some(Path::new("/bin/op"))
        );
        assert_eq!(map.resolve("docker.io/library/nginx:1"), None);
        assert!(ImageMap::parse(&["nobinary"]).is_err());
        assert!(ImageMap::parse(&["a=relative/path"]).is_err());
    }
}
