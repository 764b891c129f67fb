//! The production constructor: region and credentials from the standard chain (here the
//! environment), EC2 endpoint overridden to a moto server. Its own test binary, because it sets
//! process environment variables.

#[allow(dead_code)]
mod common;

use common::{describe_egw_owned, fast_retries, Moto};
use egw_aws::{
    AddressProvider, AddressSource, Ec2Provider, Ec2ProviderSettings, GatewayAddressIntent,
    GatewayRef,
};

#[test]
fn provider_from_the_standard_chain_talks_to_the_endpoint_override() {
    let moto = Moto::start();
    // Set while this test is the only thread that could read the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/egw-aws-test-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/egw-aws-test-credentials",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let provider = Ec2Provider::from_env(Ec2ProviderSettings {
            endpoint_url: Some(moto.endpoint.clone()),
            region: None,
            retry: fast_retries(),
            attempt_timeout: Some(std::time::Duration::from_secs(30)),
        })
        .await;
        assert_eq!(provider.region().as_deref(), Some("us-east-1"));
        let intent = GatewayAddressIntent {
            gateway: GatewayRef {
                cluster: "prod-eu".into(),
                gateway: "web".into(),
            },
            source: AddressSource::Allocate { count: 2 },
        };
        assert_eq!(provider.ensure_addresses(&intent).await.unwrap().len(), 2);
        assert_eq!(describe_egw_owned(&moto.client()).await.len(), 2);
    });
}
