//! Stable-toolchain check of the fuzz harnesses: every seed (and every file under
//! `corpus/<target>` and `artifacts/<target>`, when present) goes through the same function
//! the cargo-fuzz target calls. A crash input saved by `cargo fuzz` can be dropped into
//! `seeds/<target>/` to keep it as a regression test.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in ["seeds", "corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read_dir entry").path();
            let bytes = std::fs::read(&path).expect("read input");
            eprintln!("{}", path.display());
            harness(&bytes);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn envelope_seeds() {
    replay("envelope", wshub_fuzz::envelope);
}

#[test]
fn config_seeds() {
    replay("config", wshub_fuzz::config);
}
