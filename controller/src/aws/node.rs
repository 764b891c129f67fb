//! The EC2 instance behind a Kubernetes node: `spec.providerID` of an AWS node is
//! `aws:///<availability zone>/<instance ID>` (set by the AWS cloud controller manager, immutable).

/// Why a providerID does not name an EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderIdError {
    #[error("node has no spec.providerID (is the AWS cloud controller manager running?)")]
    Missing,
    #[error("providerID {0:?} is not an AWS EC2 providerID (aws:///<zone>/i-<hex>)")]
    NotAws(String),
}

/// The instance ID (`i-` and 8 or 17 lowercase hex digits) in an AWS providerID.
pub fn instance_id_from_provider_id(provider_id: &str) -> Result<String, ProviderIdError> {
    let not_aws = || ProviderIdError::NotAws(provider_id.to_owned());
    let path = provider_id.strip_prefix("aws:///").ok_or_else(not_aws)?;
    let (zone, instance_id) = path.split_once('/').ok_or_else(not_aws)?;
    let zone_ok = !zone.is_empty()
        && zone
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    let digits = instance_id.strip_prefix("i-").ok_or_else(not_aws)?;
    let digits_ok = matches!(digits.len(), 8 | 17)
        && digits
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if zone_ok && digits_ok {
        Ok(instance_id.to_owned())
    } else {
        Err(not_aws())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_provider_ids_name_their_instance() {
        assert_eq!(
            instance_id_from_provider_id("aws:///eu-west-1a/i-0123456789abcdef0").as_deref(),
            Ok("i-0123456789abcdef0")
        );
        assert_eq!(
            instance_id_from_provider_id("aws:///us-east-1b/i-1a2b3c4d").as_deref(),
            Ok("i-1a2b3c4d")
        );
        // Local Zones and Wavelength zones have longer names.
        assert_eq!(
            instance_id_from_provider_id("aws:///us-west-2-lax-1a/i-0123456789abcdef0").as_deref(),
            Ok("i-0123456789abcdef0")
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "aws://eu-west-1a/i-0123456789abcdef0",
            "aws:////i-0123456789abcdef0",
            "aws:///eu-west-1a/",
            "aws:///eu-west-1a/i-0123456789ABCDEF0",
            "aws:///eu-west-1a/i-0123456789abcdef",
            "aws:///eu-west-1a/i-0123456789abcdef0/extra",
            "aws:///eu-west-1a/fargate-ip-10-0-1-2.eu-west-1.compute.internal",
            "gce://project/zone/name",
            "kind://docker/kind/kind-worker",
            " aws:///eu-west-1a/i-0123456789abcdef0",
            "aws:///EU-WEST-1A/i-0123456789abcdef0",
        ] {
            assert_eq!(
                instance_id_from_provider_id(text),
                Err(ProviderIdError::NotAws(text.to_owned())),
                "{text:?}"
            );
        }
    }
}
