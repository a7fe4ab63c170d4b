//! A guard against testing stale guests: a plain `cargo test` builds the test host but not the
//! `.wasm` components, so without it a test could pass against components older than their
//! sources.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Checks that every component `source` of the manifest at `root/spin.toml` exists and is newer
/// than every file it is built from: its own crate (`components/<id>`) and the shared crates
/// (`crates/`), which is what its `spin.toml` `watch` list names. Only `.rs` and `.wit` files
/// count: a change to one always makes cargo rebuild the components that use it, while another
/// component's sources, a manifest or a lock file may not touch this one at all. The error says
/// what is stale and how to rebuild.
pub fn check(root: &Path) -> Result<(), String> {
    let manifest = std::fs::read_to_string(root.join("spin.toml"))
        .map_err(|e| format!("reading spin.toml: {e}"))?;
    let manifest: toml::Table = manifest
        .parse()
        .map_err(|e| format!("parsing spin.toml: {e}"))?;
    let shared = newest_source(&[root.join("crates")]);
    let components = manifest
        .get("component")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten();
    for (id, component) in components {
        let Some(source) = component.get("source").and_then(toml::Value::as_str) else {
            continue;
        };
        let own = newest_source(&[root.join("components").join(id)]);
        let Some((newest, newest_path)) = shared.clone().max(own) else {
            continue;
        };
        let wasm = root.join(source);
        let built = std::fs::metadata(&wasm)
            .and_then(|m| m.modified())
            .map_err(|_| format!("component {id}: {} is missing. {}", wasm.display(), HOW))?;
        if built < newest {
            return Err(format!(
                "component {id}: {} is older than {}. {}",
                wasm.display(),
                newest_path.display(),
                HOW
            ));
        }
    }
    Ok(())
}

const HOW: &str = "Rebuild the components first: bash scripts/test.sh does, or cargo build \
     --release --target wasm32-wasip2 -p tasks-api -p subscriptions -p event-intake \
     -p outbox-relay -p reminder-sweep";

/// The most recently modified `.rs` or `.wit` file under `dirs`.
fn newest_source(dirs: &[PathBuf]) -> Option<(SystemTime, PathBuf)> {
    let mut files = Vec::new();
    for dir in dirs {
        collect(dir, &mut files);
    }
    files
        .into_iter()
        .filter_map(|path| {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((modified, path))
        })
        .max()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                collect(&path, files);
            }
        } else if path.extension().is_some_and(|e| e == "rs" || e == "wit") {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::Duration;

    fn tree(wasm_age: Duration, source_age: Duration) -> PathBuf {
        let root = std::env::temp_dir().join(format!("fresh-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(root.join("crates/core/src")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(
            root.join("spin.toml"),
            "[component.api]\nsource = \"target/api.wasm\"\n",
        )
        .unwrap();
        let now = SystemTime::now();
        for (path, age) in [
            ("target/api.wasm", wasm_age),
            ("crates/core/src/lib.rs", source_age),
        ] {
            let file = File::create(root.join(path)).unwrap();
            file.set_modified(now - age).unwrap();
        }
        root
    }

    #[test]
    fn a_wasm_older_than_a_source_is_refused_with_how_to_rebuild() {
        let root = tree(Duration::from_secs(60), Duration::from_secs(1));
        let error = check(&root).unwrap_err();
        assert!(error.contains("component api"), "{error}");
        assert!(error.contains("lib.rs"), "{error}");
        assert!(
            error.contains("cargo build --release --target wasm32-wasip2"),
            "{error}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn another_components_newer_source_does_not_make_a_wasm_stale() {
        let root = tree(Duration::from_secs(30), Duration::from_secs(60));
        std::fs::create_dir_all(root.join("components/other/src")).unwrap();
        File::create(root.join("components/other/src/lib.rs")).unwrap();
        assert_eq!(check(&root), Ok(()));
        std::fs::create_dir_all(root.join("components/api/src")).unwrap();
        File::create(root.join("components/api/src/lib.rs")).unwrap();
        assert!(
            check(&root)
                .unwrap_err()
                .contains("components/api/src/lib.rs")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_wasm_newer_than_its_sources_passes_and_a_missing_one_is_named() {
        let root = tree(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(check(&root), Ok(()));
        std::fs::remove_file(root.join("target/api.wasm")).unwrap();
        assert!(check(&root).unwrap_err().contains("is missing"));
        std::fs::remove_dir_all(root).unwrap();
    }
}
