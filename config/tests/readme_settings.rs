//! The README's settings table is generated from `SETTINGS` and checked
//! here, so the documentation cannot drift from the code. Run with
//! `SIDELB_UPDATE_README=1` to rewrite it.

use sidelb_config::SETTINGS;

const BEGIN: &str = "<!-- settings:begin -->";
const END: &str = "<!-- settings:end -->";

fn table() -> String {
    let mut out = String::from(
        "| variable | flag | pod annotation | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let annotation = s
            .annotation
            .map(|a| format!("`{a}`"))
            .unwrap_or_else(|| "—".into());
        let default = if s.default.is_empty() {
            "empty".to_string()
        } else {
            format!("`{}`", s.default)
        };
        out.push_str(&format!(
            "| `{}` | `--{}` | {} | {} | {} |\n",
            s.env,
            s.flag(),
            annotation,
            default,
            s.help.replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn readme_lists_every_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md at the repository root");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no {BEGIN} … {END} section");
    };
    let current = &readme[start + BEGIN.len()..end];
    let expected = format!("\n{}", table());
    if current != expected {
        if std::env::var_os("SIDELB_UPDATE_README").is_some() {
            let updated = format!("{}{BEGIN}{expected}{}", &readme[..start], &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md's settings table is out of date; run `SIDELB_UPDATE_README=1 cargo test -p sidelb-config --test readme_settings`. Expected:\n{expected}"
            );
        }
    }
}
