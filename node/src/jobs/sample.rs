//! The `sample` source: synthetic procurement notices, the same for the same UF and dates.

use crate::search::Notice;
use crate::time::iso_date;

/// Notices per page, as the PNCP API pages them.
pub const PAGE_SIZE: usize = 50;

const OBJECTS: [&str; 12] = [
    "Aquisição de uniformes escolares",
    "Fornecimento de uniformes para a guarda municipal",
    "Contratação de serviços de limpeza urbana",
    "Aquisição de material de escritório",
    "Aquisição de medicamentos para a rede básica de saúde",
    "Fornecimento de gêneros alimentícios para a merenda escolar",
    "Pavimentação asfáltica de vias urbanas",
    "Aquisição de equipamentos de informática",
    "Fornecimento de combustível para a frota municipal",
    "Manutenção predial preventiva e corretiva",
    "Locação de veículos para transporte escolar",
    "Serviços de vigilância patrimonial",
];
const AGENCIES: [&str; 6] = [
    "Prefeitura Municipal",
    "Secretaria de Educação",
    "Secretaria de Saúde",
    "Câmara Municipal",
    "Fundo Municipal de Saúde",
    "Secretaria de Obras",
];
const MODALITIES: [&str; 4] =
    ["Pregão Eletrônico", "Concorrência", "Dispensa de Licitação", "Inexigibilidade"];
const MUNICIPALITIES: [&str; 6] =
    ["Capital", "Vila Nova", "Santa Rita", "São José", "Boa Vista do Sul", "Porto Alegre do Norte"];

/// A small deterministic generator (splitmix64), stable across releases of any crate.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn seed(uf: &str, first_day: i64, last_day: i64) -> u64 {
    // FNV-1a over the inputs: a stable seed for the same UF and dates.
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in uf.bytes().chain(first_day.to_le_bytes()).chain(last_day.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Returns how many notices the sample source has for `uf` between the days.
pub fn total_notices(uf: &str, first_day: i64, last_day: i64) -> usize {
    let days = (last_day - first_day + 1).clamp(1, 366) as u64;
    // Between 1 and 3 pages for a month, growing gently with the span.
    let base = 20 + seed(uf, first_day, last_day) % 100;
    (base + days * 3).min(40 * PAGE_SIZE as u64) as usize
}

/// Returns page `page` (1-based) of the notices of `uf` between the days.
pub fn page(uf: &str, first_day: i64, last_day: i64, page: usize) -> Vec<Notice> {
    let total = total_notices(uf, first_day, last_day);
    let start = (page.saturating_sub(1)) * PAGE_SIZE;
    (start..total.min(start + PAGE_SIZE))
        .map(|index| notice(uf, first_day, last_day, index))
        .collect()
}

fn notice(uf: &str, first_day: i64, last_day: i64, index: usize) -> Notice {
    let mut sequence = Sequence(
        seed(uf, first_day, last_day) ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    let span = (last_day - first_day + 1).max(1) as u64;
    let published_on = first_day + (sequence.next() % span) as i64;
    let opening_on = published_on + 8 + (sequence.next() % 20) as i64;
    let cents = 50_000 + sequence.next() % 500_000_000;
    let year = &iso_date(published_on)[..4];
    let control_number =
        format!("{:014}-1-{:06}/{year}", seed(uf, 0, 0) % 100_000_000_000_000, index + 1);
    Notice {
        link: format!("https://pncp.gov.br/app/editais/{}", control_number.replace(['/', '-'], "")),
        control_number,
        object: sequence.pick(&OBJECTS).to_string(),
        agency: format!("{} - {uf}", sequence.pick(&AGENCIES)),
        municipality: sequence.pick(&MUNICIPALITIES).to_string(),
        uf: uf.to_string(),
        modality: sequence.pick(&MODALITIES).to_string(),
        estimated_value: cents as f64 / 100.0,
        published_on,
        opening_on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{fold, matches};

    #[test]
    fn deterministic_pages_and_accent_insensitive_keywords() {
        let total = total_notices("SP", 20_089, 20_119);
        let pages = total.div_ceil(PAGE_SIZE);
        let all: Vec<Notice> = (1..=pages).flat_map(|n| page("SP", 20_089, 20_119, n)).collect();
        assert_eq!(all.len(), total);
        assert_eq!(page("SP", 20_089, 20_119, 1), page("SP", 20_089, 20_119, 1));
        assert_ne!(page("SP", 20_089, 20_119, 1), page("RJ", 20_089, 20_119, 1));
        assert!(page("SP", 20_089, 20_119, pages + 1).is_empty());
        assert!(all
            .iter()
            .all(|n| (20_089..=20_119).contains(&n.published_on) && n.opening_on > n.published_on));
        assert_eq!(fold("LICITAÇÃO Uniformes"), "licitacao uniformes");
        let keywords = vec![fold("Uniforme")];
        let matching = all.iter().filter(|n| matches(n, &keywords)).count();
        assert!(matching > 0 && matching < all.len(), "{matching} of {}", all.len());
    }
}
