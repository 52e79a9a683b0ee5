//! The `file` source: notices from a JSONL file (`--source-file`), one JSON object a line.
//!
//! Each line has the fields of [`Notice`], with `published_on` and `opening_on` as ISO
//! dates (`YYYY-MM-DD`). The file is read once, at start; a bad line stops the start
//! with its line number.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::search::Notice;
use crate::time::parse_iso_date;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeLine {
    control_number: String,
    object: String,
    agency: String,
    municipality: String,
    uf: String,
    modality: String,
    estimated_value: f64,
    published_on: String,
    opening_on: String,
    link: String,
}

/// Reads every notice of the JSONL file at `path`.
pub fn load(path: &Path) -> anyhow::Result<Vec<Notice>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --source-file {}", path.display()))?;
    let mut notices = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), number + 1);
        let line: NoticeLine = serde_json::from_str(line).with_context(at)?;
        let date = |text: &str| {
            parse_iso_date(text).with_context(|| format!("{}: {text:?} is not YYYY-MM-DD", at()))
        };
        let (published_on, opening_on) = (date(&line.published_on)?, date(&line.opening_on)?);
        if !line.estimated_value.is_finite() {
            bail!("{}: estimated_value is not a number", at());
        }
        notices.push(Notice {
            control_number: line.control_number,
            object: line.object,
            agency: line.agency,
            municipality: line.municipality,
            uf: line.uf.to_ascii_uppercase(),
            modality: line.modality,
            estimated_value: line.estimated_value,
            published_on,
            opening_on,
            link: line.link,
        });
    }
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_lines_and_names_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let good = r#"{"control_number":"1","object":"Uniformes","agency":"A","municipality":"M","uf":"sp","modality":"Pregão","estimated_value":10.5,"published_on":"2025-01-02","opening_on":"2025-01-10","link":"https://x"}"#;
        let path = dir.path().join("notices.jsonl");
        std::fs::write(&path, format!("{good}\n\n{good}\n")).unwrap();
        let notices = load(&path).unwrap();
        assert_eq!(
            (notices.len(), notices[0].uf.as_str(), notices[0].published_on),
            (2, "SP", 20_090)
        );
        std::fs::write(&path, format!("{good}\n{}\n", good.replace("2025-01-02", "2025-02-31")))
            .unwrap();
        let error = format!("{:#}", load(&path).unwrap_err());
        assert!(error.contains("line 2"), "{error}");
    }
}
