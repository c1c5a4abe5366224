//! The TLS client of HTTPS and gRPC-over-TLS checks (rustls with ring).
//!
//! - Trust: the system's CA bundle (`SSL_CERT_FILE`, else Debian's `/etc/ssl/certs/ca-certificates.crt`)
//!   plus the Mozilla roots, as a Go program's system pool would trust.
//! - `tls_skip_verify`: any certificate is accepted (handshake signatures are still checked, so the peer
//!   holds the key of the certificate it shows).
//! - `tls_server_name`: the certificate is verified against this name instead of the URL's host.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::{Arc, OnceLock};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The roots every check trusts, loaded once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            if let Ok(certs) = CertificateDer::pem_file_iter(&bundle) {
                let (added, _) = roots.add_parsable_certificates(certs.flatten());
                tracing::debug!(target: "agent.checks", "{added} CA certificates from {}", bundle.display());
            }
            Arc::new(roots)
        })
        .clone()
}

/// A client configuration for one check. `alpn`: the protocols to offer (`h2` for gRPC). `extra_roots`
/// are trusted on top of the system's (tests use it for their own CA).
pub(crate) fn client_config(
    skip_verify: bool,
    server_name: &str,
    alpn: &[&[u8]],
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let roots = if extra_roots.is_empty() {
        system_roots()
    } else {
        let mut roots = (*system_roots()).clone();
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        Arc::new(roots)
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let name = if server_name.is_empty() {
        None
    } else {
        Some(ServerName::try_from(server_name.to_string()).map_err(|e| format!("TLSServerName {server_name:?}: {e}"))?)
    };
    let verifier = CheckVerifier {
        webpki,
        skip_verify,
        name,
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct CheckVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    skip_verify: bool,
    /// `tls_server_name`: verify against this name, not the one dialled.
    name: Option<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CheckVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.skip_verify {
            return Ok(ServerCertVerified::assertion());
        }
        let name = self.name.as_ref().unwrap_or(server_name);
        self.webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
