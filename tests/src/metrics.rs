//! Reading a process's `/metrics` in tests: a real HTTP GET (status 200, the Prometheus
//! text content type), and one series' value, where a series that is not there is an
//! error rather than a 0 that would pass for "nothing happened".

use anyhow::{Context, ensure};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `GET /metrics` at `addr`: the body, after checking the status and content type.
pub async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}/metrics").parse()?)
        .await
        .with_context(|| format!("GET http://{addr}/metrics"))?;
    ensure!(
        response.status().as_u16() == 200,
        "status {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type:?}"
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

/// The value of `series` (name and labels, as written) in a scrape, if it is there.
pub fn find(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of `series`; an error naming it when the scrape does not have it.
pub fn value(text: &str, series: &str) -> anyhow::Result<f64> {
    find(text, series).with_context(|| format!("series `{series}` is not in the scrape"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_series_is_an_error_not_zero() {
        let text = "# TYPE a counter\na_total{flow=\"x\"} 3\na_total{flow=\"xy\"} 4\n";
        assert_eq!(value(text, "a_total{flow=\"x\"}").ok(), Some(3.0));
        assert_eq!(find(text, "a_total{flow=\"xy\"}"), Some(4.0));
        assert!(value(text, "a_total{flow=\"z\"}").is_err());
        assert!(
            value(text, "a_total").is_err(),
            "a prefix is not the series"
        );
    }
}
