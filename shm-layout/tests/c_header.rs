//! The checked-in C header is what the generator prints, and a C compiler
//! accepts its `_Static_assert`s (every size and offset equal to Rust's).
#![cfg(not(loom))]

use std::path::PathBuf;
use std::process::Command;

fn header_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/marllb_shm.h")
}

#[test]
fn checked_in_header_matches_the_rust_layout() {
    let want = marllb_shm::cheader::c_header();
    let have = std::fs::read_to_string(header_path()).unwrap_or_default();
    if have != want {
        let mut diff = String::new();
        let (h, w): (Vec<&str>, Vec<&str>) = (have.lines().collect(), want.lines().collect());
        for i in 0..h.len().max(w.len()) {
            let (a, b) = (h.get(i).copied(), w.get(i).copied());
            if a != b {
                diff += &format!(
                    "line {}:\n  checked in: {}\n  generated:  {}\n",
                    i + 1,
                    a.unwrap_or("<none>"),
                    b.unwrap_or("<none>")
                );
            }
        }
        panic!(
            "include/marllb_shm.h drifted from the Rust layout; regenerate with\n  \
             cargo run -p marllb-shm --bin marllb-shm-header > shm-layout/include/marllb_shm.h\n\
             first differences:\n{}",
            diff.lines().take(30).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn c_compiler_accepts_the_static_asserts() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("skipping: no C compiler ({cc})");
        return;
    }
    let dir = std::env::temp_dir().join(format!("marllb-shm-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("check.c");
    std::fs::write(
        &src,
        "#include \"marllb_shm.h\"\n\
         _Static_assert(MARLLB_SHM_REGION_SIZE(1) == sizeof(struct marllb_region_fixed) + \
         sizeof(struct marllb_stats_block), \"region size\");\n\
         int main(void) { return 0; }\n",
    )
    .unwrap();
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-c",
            "-o",
        ])
        .arg(dir.join("check.o"))
        .arg("-I")
        .arg(header_path().parent().unwrap())
        .arg(&src)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "C compile of marllb_shm.h failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
