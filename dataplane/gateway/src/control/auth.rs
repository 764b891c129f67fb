//! Caller roles: Unix socket callers are admins; TCP callers are mapped from
//! their verified client certificate (see the module docs of `control`).

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only RPCs, health and reflection.
    Reader,
    /// Everything, including ApplyRouteTable and Drain.
    Admin,
}

/// The identity lists of a TLS listener.
#[derive(Debug, Default)]
pub(crate) struct IdentityRules {
    pub(crate) admins: Vec<String>,
    pub(crate) readers: Vec<String>,
}

/// Assigns a [`Role`] to every request (stored in its extensions) or refuses it.
#[derive(Debug, Clone)]
pub(crate) enum Authenticator {
    /// Unix socket: file permissions already decided.
    Unix,
    /// TCP with mutual TLS: roles from the client certificate.
    Mtls(Arc<IdentityRules>),
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let role = match self {
            Authenticator::Unix => Role::Admin,
            Authenticator::Mtls(rules) => role_from_certificate(&request, rules)?,
        };
        request.extensions_mut().insert(role);
        Ok(request)
    }
}

fn role_from_certificate(request: &Request<()>, rules: &IdentityRules) -> Result<Role, Status> {
    // The TLS handshake already required a certificate chaining to the client
    // CA; a missing one here means the listener is misconfigured, so fail closed.
    let certificates = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certificates
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let identities = certificate_identities(leaf.as_ref()).map_err(|problem| {
        Status::unauthenticated(format!("unreadable client certificate: {problem}"))
    })?;
    let listed = |list: &[String]| identities.iter().any(|identity| list.contains(identity));
    if listed(&rules.admins) {
        Ok(Role::Admin)
    } else if listed(&rules.readers) {
        Ok(Role::Reader)
    } else {
        Err(Status::permission_denied(format!(
            "client certificate identities {identities:?} are listed in neither the admin nor the reader identities"
        )))
    }
}

/// The identities of a DER certificate: subject CNs, DNS SANs and URI SANs.
pub(crate) fn certificate_identities(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|error| error.to_string())?;
    let mut identities: Vec<String> = certificate
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok())
        .map(str::to_owned)
        .collect();
    if let Ok(Some(alternative_names)) = certificate.subject_alternative_name() {
        for name in &alternative_names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => identities.push((*dns).to_owned()),
                GeneralName::URI(uri) => identities.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    Ok(identities)
}

/// Refuses the request unless its caller holds at least `needed`.
pub(crate) fn require<T>(request: &Request<T>, needed: Role) -> Result<(), Status> {
    match request.extensions().get::<Role>() {
        Some(role) if *role >= needed => Ok(()),
        Some(_) => Err(Status::permission_denied(
            "this RPC needs the admin role; the client certificate identity is only a reader",
        )),
        None => Err(Status::permission_denied("caller role unknown")),
    }
}
