//! TLS for the helper's own HTTP requests (health probes, web-admin refresh).
//!
//! A server with only HTTPS listeners is reached on loopback (`https://127.0.0.1:443`, what
//! upstream's own container health check probes). Its certificate names the mail domain, not
//! 127.0.0.1, and is often self-signed, so on loopback no name or chain check can pass: there the
//! helper accepts the certificate the server presents (signatures are still checked). Any process
//! of this machine can listen on loopback, the service user's too, so that alone proves nothing:
//! credentials go there only after `webadmin::Endpoint` checked that the listening socket belongs
//! to a process of the server's own unit; the health probe sends none. Any other host is checked
//! against the CA file (`[webadmin] ca_file`) or the system roots.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// True for `http(s)://localhost`, `127.0.0.0/8` and `[::1]` URLs.
pub fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client settings for `https://` on loopback: the server's own certificate, whatever it names.
pub fn loopback_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Client settings that trust exactly the certificates in `roots`.
pub fn roots_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts any certificate, but still checks that the server holds its key (the handshake
/// signatures), so the connection is at least encrypted to whoever answers on loopback.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:8080",
            "https://127.0.0.1:443/x",
            "https://localhost",
            "http://[::1]:8080/",
            "https://127.1.2.3:8443",
        ] {
            assert!(is_loopback(u), "{u}");
        }
        for u in [
            "https://mail.example.org",
            "http://10.0.0.1:8080",
            "https://[::2]:443",
            "ftp://127.0.0.1",
            "https://127.0.0.1.evil.example/",
        ] {
            assert!(!is_loopback(u), "{u}");
        }
        assert!(loopback_config().is_ok());
    }
}
