//! Malformed programs: each file in tests/diagnostics/ names the diagnostic codes it must
//! produce in its first line (`# expect: E041, W002`). The test checks that exactly those codes
//! appear, and snapshots the rendered diagnostics (plain text, no colour) with insta.

use std::collections::BTreeSet;
use std::path::Path;

fn expected_codes(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).expect("fixture readable");
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or_default();
    let list = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("{}: first line must be `# expect: CODE, ...`", path.display()));
    list.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
}

#[test]
fn every_malformed_program_gets_its_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    insta::glob!("diagnostics/*.tri", |path| {
        count += 1;
        let rel = path.strip_prefix(root).expect("fixture inside the package");
        let checked = triton::check_file(rel);
        let rendered = checked.render_plain();
        let actual: BTreeSet<String> = checked.diags().iter().map(|d| d.code.as_str().to_string()).collect();
        let expected = expected_codes(path);
        assert_eq!(actual, expected, "{}: wrong diagnostic codes; rendered:\n{rendered}", rel.display());
        let has_error_code = expected.iter().any(|c| c.starts_with('E'));
        assert_eq!(checked.has_errors(), has_error_code, "{}", rel.display());
        // Every diagnostic points somewhere and says something.
        for d in checked.diags().iter() {
            assert!(!d.message.is_empty());
            if d.code.as_str() != "E001" {
                assert!(d.primary_span().is_some(), "{}: `{}` has no location", rel.display(), d.message);
            }
        }
        insta::assert_snapshot!(rendered);
    });
    assert!(count >= 40, "expected at least 40 malformed programs, found {count}");
}

#[test]
fn every_code_is_documented_and_exercised_by_a_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/diagnostics.md")).expect("docs/diagnostics.md");
    let mut exercised = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("tests/diagnostics")).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tri") {
            exercised.extend(expected_codes(&path));
        }
    }
    // E001 (unreadable file) and E003 (file too large) are exercised by the CLI tests, which
    // pass a missing path and a 10 MB file.
    exercised.insert("E001".to_string());
    exercised.insert("E003".to_string());
    for code in triton::compiler::diagnostics::Code::ALL {
        let c = code.as_str();
        assert!(docs.contains(&format!("`{c}`")), "{c} is not documented in docs/diagnostics.md");
        assert!(exercised.contains(c), "{c} ({}) has no fixture in tests/diagnostics", code.summary());
    }
}
