//! [`Notice`]: one procurement notice, whatever source it came from, and keyword matching.

use serde::{Deserialize, Serialize};

/// One procurement notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub control_number: String,
    pub object: String,
    pub agency: String,
    pub municipality: String,
    pub uf: String,
    pub modality: String,
    pub estimated_value: f64,
    /// Days since 1970-01-01.
    pub published_on: i64,
    pub opening_on: i64,
    pub link: String,
}

/// Folds case and Portuguese accents, so `Uniforme` matches `UNIFORMES` and `licitação` `licitacao`.
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            other => other,
        })
        .collect()
}

/// Returns whether `notice` matches any of the folded `keywords` (all match when none).
pub fn matches(notice: &Notice, folded_keywords: &[String]) -> bool {
    folded_keywords.is_empty() || {
        let object = fold(&notice.object);
        folded_keywords.iter().any(|keyword| object.contains(keyword.as_str()))
    }
}
