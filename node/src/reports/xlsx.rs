//! The Excel report of a search: a results sheet with typed cells and a summary sheet.

use std::collections::BTreeMap;

use rust_xlsxwriter::{
    ExcelDateTime, Format, FormatAlign, Formula, Url, Workbook, Worksheet, XlsxError,
};

use crate::search::{Notice, SearchParams};
use crate::time::{civil_from_days, rfc3339_millis};

/// Above this many rows the results sheet is streamed to a temp file row by row
/// (rust_xlsxwriter's constant-memory mode) instead of held in memory.
pub const CONSTANT_MEMORY_ROWS: usize = 5_000;
/// Excel allows this many hyperlinks per sheet; further links are written as text.
const MAX_HYPERLINKS: usize = 65_530;
/// The longest text a string literal in an Excel formula may hold.
const MAX_FORMULA_STRING: usize = 255;

const RESULTS_SHEET: &str = "Resultados";
const SUMMARY_SHEET: &str = "Resumo";
/// Results columns: header and width in characters.
const COLUMNS: [(&str, f64); 10] = [
    ("Número de controle", 30.0),
    ("Objeto", 60.0),
    ("Órgão", 36.0),
    ("Município", 24.0),
    ("UF", 6.0),
    ("Modalidade", 24.0),
    ("Valor estimado", 18.0),
    ("Publicação", 12.0),
    ("Abertura", 12.0),
    ("Link", 50.0),
];
const CURRENCY: &str = "\"R$\" #,##0.00";
const DATE: &str = "dd/mm/yyyy";

/// What a report is built from.
#[derive(Debug)]
pub struct ReportInput<'a> {
    pub search_id: &'a str,
    pub params: &'a SearchParams,
    pub notices: &'a [Notice],
    pub generated_at_ms: u64,
    pub instance_id: &'a str,
}

fn excel_date(days: i64) -> Result<ExcelDateTime, XlsxError> {
    let (year, month, day) = civil_from_days(u64::try_from(days).unwrap_or(0));
    ExcelDateTime::from_ymd(year as u16, month as u8, day as u8)
}

/// Builds the .xlsx file. Runs for a while on big searches: call it off the async threads.
pub fn build(input: &ReportInput<'_>) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    // Level 4 instead of zlib's default 6: 100,000 rows build about a fifth faster for
    // a file 3 % larger (docs/decisions.md).
    workbook.set_zip_compression_level(4);
    let header = Format::new().set_bold().set_background_color("#DDEBF7");
    let currency = Format::new().set_num_format(CURRENCY);
    let date = Format::new().set_num_format(DATE).set_align(FormatAlign::Center);
    let link = Format::new()
        .set_font_color("#0563C1")
        .set_underline(rust_xlsxwriter::FormatUnderline::Single);

    let constant_memory = input.notices.len() > CONSTANT_MEMORY_ROWS;
    let results = if constant_memory {
        workbook.add_worksheet_with_constant_memory()?
    } else {
        workbook.add_worksheet()
    };
    results.set_name(RESULTS_SHEET)?;
    for (col, (title, width)) in COLUMNS.iter().enumerate() {
        results.set_column_width(col as u16, *width)?;
        results.write_string_with_format(0, col as u16, *title, &header)?;
    }
    results.set_freeze_panes(1, 0)?;
    for (index, notice) in input.notices.iter().enumerate() {
        let row = index as u32 + 1;
        results.write_string(row, 0, &notice.control_number)?;
        results.write_string(row, 1, &notice.object)?;
        results.write_string(row, 2, &notice.agency)?;
        results.write_string(row, 3, &notice.municipality)?;
        results.write_string(row, 4, &notice.uf)?;
        results.write_string(row, 5, &notice.modality)?;
        results.write_number_with_format(row, 6, notice.estimated_value, &currency)?;
        results.write_date_with_format(row, 7, &excel_date(notice.published_on)?, &date)?;
        results.write_date_with_format(row, 8, &excel_date(notice.opening_on)?, &date)?;
        if constant_memory && notice.link.len() <= MAX_FORMULA_STRING {
            // A sheet's hyperlinks are kept in memory until the file is written (90 MB for
            // 100,000 rows); a HYPERLINK formula is written with its row, and clicks alike.
            let quoted = notice.link.replace('"', "\"\"");
            let formula = Formula::new(format!("HYPERLINK(\"{quoted}\",\"{quoted}\")"))
                .set_result(notice.link.as_str());
            results.write_formula_with_format(row, 9, formula, &link)?;
        } else if !constant_memory && index < MAX_HYPERLINKS && notice.link.len() < 2080 {
            results.write_url_with_format(row, 9, Url::new(notice.link.as_str()), &link)?;
        } else {
            results.write_string(row, 9, &notice.link)?;
        }
    }
    results.autofilter(0, 0, input.notices.len() as u32, (COLUMNS.len() - 1) as u16)?;

    let summary = workbook.add_worksheet();
    summary.set_name(SUMMARY_SHEET)?;
    write_summary(summary, input, &header, &currency)?;
    workbook.save_to_buffer()
}

fn write_summary(
    sheet: &mut Worksheet,
    input: &ReportInput<'_>,
    header: &Format,
    currency: &Format,
) -> Result<(), XlsxError> {
    sheet.set_column_width(0, 22)?;
    sheet.set_column_width(1, 14)?;
    sheet.set_column_width(2, 24)?;
    for (col, title) in ["UF", "Editais", "Valor estimado"].into_iter().enumerate() {
        sheet.write_string_with_format(0, col as u16, title, header)?;
    }
    let mut per_uf: BTreeMap<&str, (u64, f64)> =
        input.params.ufs.iter().map(|uf| (uf.as_str(), (0, 0.0))).collect();
    for notice in input.notices {
        let totals = per_uf.entry(notice.uf.as_str()).or_default();
        totals.0 += 1;
        totals.1 += notice.estimated_value;
    }
    let mut row = 1;
    for (uf, (count, value)) in &per_uf {
        sheet.write_string(row, 0, *uf)?;
        sheet.write_number(row, 1, *count as f64)?;
        sheet.write_number_with_format(row, 2, *value, currency)?;
        row += 1;
    }
    let bold = Format::new().set_bold();
    let total_value: f64 = per_uf.values().map(|(_, value)| value).sum();
    sheet.write_string_with_format(row, 0, "Total", &bold)?;
    sheet.write_number_with_format(row, 1, input.notices.len() as f64, &bold)?;
    sheet.write_number_with_format(row, 2, total_value, &currency.clone().set_bold())?;

    row += 2;
    sheet.write_string_with_format(row, 0, "Parâmetros da busca", header)?;
    let params = input.params;
    let keywords =
        if params.keywords.is_empty() { "(todas)".to_string() } else { params.keywords.join(", ") };
    let lines = [
        ("Busca", input.search_id.to_string()),
        ("UFs", params.ufs.join(", ")),
        ("De", params.date_from.clone()),
        ("Até", params.date_to.clone()),
        ("Palavras-chave", keywords),
        ("Fonte", params.source.clone()),
        ("Gerado em (UTC)", rfc3339_millis(input.generated_at_ms)),
        ("Nó", input.instance_id.to_string()),
    ];
    for (label, value) in lines {
        row += 1;
        sheet.write_string_with_format(row, 0, label, &bold)?;
        sheet.write_string(row, 1, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{Data, Reader, Xlsx};

    use super::*;

    fn notice(n: usize, uf: &str) -> Notice {
        Notice {
            control_number: format!("CN-{n}"),
            object: "Aquisição de uniformes".into(),
            agency: "Prefeitura".into(),
            municipality: "Capital".into(),
            uf: uf.into(),
            modality: "Pregão Eletrônico".into(),
            estimated_value: 1234.5 + n as f64,
            published_on: 20_089,
            opening_on: 20_100,
            link: format!("https://pncp.gov.br/app/editais/{n}"),
        }
    }

    fn params() -> SearchParams {
        SearchParams {
            ufs: vec!["SP".into(), "RJ".into()],
            date_from: "2025-01-01".into(),
            date_to: "2025-01-31".into(),
            keywords: vec!["uniforme".into()],
            source: "sample".into(),
        }
    }

    fn read_back(rows: usize) -> (Vec<Vec<Data>>, Vec<Vec<Data>>) {
        let notices: Vec<Notice> =
            (0..rows).map(|n| notice(n, if n % 3 == 0 { "RJ" } else { "SP" })).collect();
        let params = params();
        let input = ReportInput {
            search_id: "s1",
            params: &params,
            notices: &notices,
            generated_at_ms: 0,
            instance_id: "n1",
        };
        let bytes = build(&input).unwrap();
        let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
        assert_eq!(
            workbook.sheet_names(),
            vec![RESULTS_SHEET.to_string(), SUMMARY_SHEET.to_string()]
        );
        let results = workbook.worksheet_range(RESULTS_SHEET).unwrap();
        let summary = workbook.worksheet_range(SUMMARY_SHEET).unwrap();
        (
            results.rows().map(<[Data]>::to_vec).collect(),
            summary.rows().map(<[Data]>::to_vec).collect(),
        )
    }

    #[test]
    fn typed_cells_and_a_summary() {
        let (results, summary) = read_back(30);
        assert_eq!(results.len(), 31);
        assert_eq!(results[0][0], Data::String("Número de controle".into()));
        let first = &results[1];
        assert_eq!(first[0], Data::String("CN-0".into()));
        assert_eq!(first[6], Data::Float(1234.5), "value is a number");
        assert!(matches!(first[7], Data::DateTime(_)), "publication is a date: {:?}", first[7]);
        if let Data::DateTime(date) = &first[7] {
            assert_eq!(date.as_f64(), 45_658.0, "2025-01-01 as an Excel serial date");
        }
        assert!(matches!(first[8], Data::DateTime(_)));
        assert_eq!(first[9], Data::String("https://pncp.gov.br/app/editais/0".into()));
        assert_eq!(summary[1][0], Data::String("RJ".into()));
        assert_eq!(summary[1][1], Data::Float(10.0));
        assert_eq!(summary[2][1], Data::Float(20.0));
        assert_eq!(summary[3][1], Data::Float(30.0), "total row");
    }

    #[test]
    fn large_reports_use_constant_memory_and_keep_every_row() {
        let rows = CONSTANT_MEMORY_ROWS + 7;
        let (results, _) = read_back(rows);
        assert_eq!(results.len(), rows + 1);
        assert_eq!(results[rows][0], Data::String(format!("CN-{}", rows - 1)));
        assert!(matches!(results[rows][7], Data::DateTime(_)));
        // Links are HYPERLINK formulas whose cached value is the URL.
        let link = format!("https://pncp.gov.br/app/editais/{}", rows - 1);
        assert_eq!(results[rows][9], Data::String(link));
    }
}
