//! The `pncp` source: the PNCP public consultation API (`/v1/contratacoes/publicacao`).
//!
//! Pages of 50, one modality at a time; 204 means no data; 429 and 5xx are retried with
//! exponential backoff (honouring `Retry-After`); at most `concurrency` requests are in
//! flight across every search of the node.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::search::Notice;
use crate::time::{iso_date, parse_iso_date};

/// Notices per page asked of PNCP.
pub const PAGE_SIZE: usize = 50;
const MAX_ATTEMPTS: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A client of one PNCP base URL.
#[derive(Debug, Clone)]
pub struct PncpClient {
    http: reqwest::Client,
    base_url: String,
    modalities: Vec<u32>,
    permits: Arc<Semaphore>,
    backoff: Duration,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct PncpPage {
    pub notices: Vec<Notice>,
    pub total_pages: usize,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    data: Vec<Contratacao>,
    #[serde(default)]
    total_paginas: usize,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contratacao {
    #[serde(rename = "numeroControlePNCP")]
    numero_controle_pncp: String,
    #[serde(default)]
    objeto_compra: String,
    #[serde(default)]
    orgao_entidade: Option<Orgao>,
    #[serde(default)]
    unidade_orgao: Option<Unidade>,
    #[serde(default)]
    modalidade_nome: String,
    #[serde(default)]
    valor_total_estimado: Option<f64>,
    #[serde(default)]
    data_publicacao_pncp: Option<String>,
    #[serde(default)]
    data_abertura_proposta: Option<String>,
    #[serde(default)]
    link_sistema_origem: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Orgao {
    #[serde(default)]
    razao_social: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Unidade {
    #[serde(default)]
    municipio_nome: String,
    #[serde(default)]
    uf_sigla: String,
}

/// Returns the days since 1970-01-01 of a PNCP timestamp such as `2025-01-15T10:00:00`.
fn day_of(timestamp: Option<&str>) -> Option<i64> {
    parse_iso_date(timestamp?.get(..10)?)
}

impl Contratacao {
    fn into_notice(self, uf: &str) -> Notice {
        let published_on = day_of(self.data_publicacao_pncp.as_deref()).unwrap_or(0);
        let link =
            self.link_sistema_origem.filter(|link| link.starts_with("http")).unwrap_or_else(|| {
                format!(
                    "https://pncp.gov.br/app/editais/{}",
                    self.numero_controle_pncp.replace(['/', '-'], "")
                )
            });
        let unidade = self.unidade_orgao;
        Notice {
            control_number: self.numero_controle_pncp,
            object: self.objeto_compra,
            agency: self.orgao_entidade.map(|orgao| orgao.razao_social).unwrap_or_default(),
            municipality: unidade.as_ref().map(|u| u.municipio_nome.clone()).unwrap_or_default(),
            uf: unidade
                .map(|u| u.uf_sigla)
                .filter(|sigla| !sigla.is_empty())
                .unwrap_or_else(|| uf.to_string()),
            modality: self.modalidade_nome,
            estimated_value: self.valor_total_estimado.unwrap_or(0.0),
            published_on,
            opening_on: day_of(self.data_abertura_proposta.as_deref()).unwrap_or(published_on),
            link,
        }
    }
}

impl PncpClient {
    /// Returns a client of `base_url` asking for `modalities`, with at most `concurrency`
    /// requests in flight and retries starting at `backoff`.
    pub fn new(
        base_url: &str,
        modalities: Vec<u32>,
        concurrency: usize,
        backoff: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS always builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            modalities,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            backoff,
        }
    }

    /// Returns the modalities asked for, in order.
    pub fn modalities(&self) -> &[u32] {
        &self.modalities
    }

    /// Fetches page `page` (1-based) of `modality` in `uf` between the days.
    pub async fn page(
        &self,
        uf: &str,
        first_day: i64,
        last_day: i64,
        modality: u32,
        page: usize,
    ) -> Result<PncpPage, String> {
        let compact = |days: i64| iso_date(days).replace('-', "");
        let url = format!(
            "{}/v1/contratacoes/publicacao?dataInicial={}&dataFinal={}&codigoModalidadeContratacao={modality}&uf={uf}&pagina={page}&tamanhoPagina={PAGE_SIZE}",
            self.base_url,
            compact(first_day),
            compact(last_day),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = {
                let _permit =
                    self.permits.acquire().await.map_err(|_| "pncp client closed".to_string())?;
                self.http.get(&url).header("accept", "application/json").send().await
            };
            let retry_in = match outcome {
                Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => {
                    return Ok(PncpPage { notices: Vec::new(), total_pages: 0 });
                }
                Ok(response) if response.status().is_success() => {
                    let envelope: Envelope = response.json().await.map_err(|error| {
                        format!("PNCP answered a page that is not its JSON envelope: {error}")
                    })?;
                    let notices =
                        envelope.data.into_iter().map(|item| item.into_notice(uf)).collect();
                    return Ok(PncpPage { notices, total_pages: envelope.total_paginas });
                }
                Ok(response) if response.status() == 429 || response.status().is_server_error() => {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    tracing::warn!(status = %response.status(), attempt, %url, "PNCP refused a page; retrying");
                    retry_after
                }
                Ok(response) => {
                    return Err(format!("PNCP answered {} for {url}", response.status()));
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, %url, "PNCP unreachable; retrying");
                    None
                }
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(format!("PNCP failed {MAX_ATTEMPTS} times for {url}"));
            }
            let backoff = self.backoff.saturating_mul(1 << (attempt - 1));
            tokio::time::sleep(retry_in.unwrap_or(backoff).min(MAX_BACKOFF)).await;
        }
    }
}
