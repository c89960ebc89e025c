//! The committed data (`docs/plots/*.json`) still draws: every plot renders
//! into a temporary folder as well-formed SVG with its series' labels.

use std::path::{Path, PathBuf};

use rtm_plots::{Dataset, PLOTS};

/// A folder of its own under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("rtm-plots-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The data folder of this repository (nothing outside it is read).
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plots")
}

/// Text as the SVG backend writes it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Checks that `svg` is well-formed XML of the shapes an SVG file has: one
/// `<svg>` root, every element closed in order, quoted attributes, and no
/// bare `&` or `<` in text. Panics with the offending place otherwise.
fn assert_well_formed(svg: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start]);
        let tag_end = rest[start..]
            .find('>')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("unclosed tag at {:?}", &rest[start..]));
        let tag = &rest[start + 1..tag_end];
        rest = &rest[tag_end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            assert!(open.is_empty(), "declaration inside an element: <{tag}>");
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body.split_whitespace().next().unwrap_or("");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
            "bad element name in <{tag}>"
        );
        assert_eq!(
            body.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if open.is_empty() {
            roots += 1;
            assert_eq!(name, "svg", "the root element is <{name}>");
        }
        if !self_closing {
            open.push(name);
        }
    }
    check_text(rest);
    assert!(open.is_empty(), "never closed: {open:?}");
    assert_eq!(roots, 1, "{roots} root elements");
}

fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "bare & in {text:?}"
        );
    }
}

#[test]
fn the_committed_data_renders_to_well_formed_svg_with_every_label() {
    let out = TempDir::new();
    let written = rtm_plots::render_all(&data_dir(), &out.0).unwrap();
    assert_eq!(written.len(), PLOTS.len());
    for (json, svg, _) in PLOTS {
        let data = Dataset::load(&data_dir().join(json)).unwrap();
        assert!(!data.series.is_empty(), "{json}: no series");
        let text = std::fs::read_to_string(out.0.join(svg)).unwrap();
        assert_well_formed(&text);
        assert!(text.contains("<text"), "{svg}: no text");
        assert!(text.contains(&escaped(&data.commit)), "{svg}: no commit");
        for series in &data.series {
            assert!(
                series.points.iter().all(|p| !p.runs.is_empty()),
                "{json}: a point of {} has no run",
                series.key
            );
            // The delivered rate of the latency plot is drawn as the
            // capacity line and the footer, not as a line of its own.
            if series.key != "delivered" {
                assert!(
                    text.contains(&escaped(&series.name)),
                    "{svg}: no label {:?}",
                    series.name
                );
            }
        }
    }
}

#[test]
fn the_checker_rejects_broken_svg() {
    let bad = [
        "<svg><text>a</svg>",
        "<svg><g></text></g></svg>",
        "<svg><text>a & b</text></svg>",
        "<svg/><svg/>",
    ];
    for svg in bad {
        assert!(
            std::panic::catch_unwind(|| assert_well_formed(svg)).is_err(),
            "accepted {svg:?}"
        );
    }
    assert_well_formed(
        "<?xml version=\"1.0\"?><svg a=\"1\"><text x=\"2\">a &amp; b</text><rect/></svg>",
    );
}
