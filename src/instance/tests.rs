use super::*;

fn base() -> InstanceBuilder {
    Instance::builder("orders", "orders-1")
        .host("10.0.0.1")
        .port(8080)
}

#[test]
fn service_names_are_dns_labels() {
    for ok in ["orders", "a", "payments.eu", "a-b.c-d", &"a".repeat(63)] {
        assert!(ServiceName::new(ok).is_ok(), "{ok}");
    }
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
    ]
    .join(".");
    assert_eq!(long.len(), 255);
    for bad in [
        "",
        "Orders",
        "-orders",
        "orders-",
        "or_ders",
        "a..b",
        ".a",
        &"a".repeat(64),
        &long,
        "ordérs",
    ] {
        let err = ServiceName::new(bad).unwrap_err();
        assert_eq!(err.field(), Field::Service);
        assert!(err.to_string().starts_with("invalid service name"), "{err}");
    }
}

#[test]
fn port_zero_names_field_value_and_instance() {
    let err = base().port(0).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid port 0 for instance "orders-1": must be in 1..=65535"#
    );
    assert_eq!(err.field(), Field::Port);
    assert_eq!(err.value(), "0");
    assert_eq!(err.instance(), Some("orders-1"));
    let err = base().port(70_000).build().unwrap_err();
    assert_eq!(err.value(), "70000");
    assert!(base().port(65_535).build().is_ok());
}

#[test]
fn missing_port_is_an_error() {
    let err = Instance::builder("orders", "orders-1").build().unwrap_err();
    assert_eq!(err.field(), Field::Port);
}

#[test]
fn hosts_are_ip_literals_or_dns_names() {
    for ok in [
        "10.0.0.1",
        "::1",
        "fe80::1",
        "orders.internal",
        "Orders-1.example.COM",
        "localhost",
    ] {
        assert!(base().host(ok).build().is_ok(), "{ok}");
    }
    for bad in [
        "",
        "10.0.0.256",
        "1.2.3",
        "[::1]",
        "has space",
        "a_b.com",
        "-a.com",
        "a..b",
    ] {
        let err = base().host(bad).build().unwrap_err();
        assert_eq!(err.field(), Field::Host, "{bad}");
        assert_eq!(err.value(), bad);
    }
}

#[test]
fn ipv6_authority_is_bracketed() {
    let i = base().host("::1").build().unwrap();
    assert_eq!(i.authority(), "[::1]:8080");
}

#[test]
fn versions_zones_ids_are_checked() {
    assert_eq!(
        base().version("").build().unwrap_err().field(),
        Field::Version
    );
    assert_eq!(
        base().version("1 2").build().unwrap_err().field(),
        Field::Version
    );
    assert_eq!(
        base().zone("eu west").build().unwrap_err().field(),
        Field::Zone
    );
    let err = Instance::builder("orders", "bad id")
        .port(1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Field::Id);
    assert_eq!(err.value(), "bad id");
    let err = Instance::builder("Orders", "o-1")
        .port(1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), Field::Service);
    assert_eq!(err.instance(), Some("o-1"));
}

#[test]
fn weight_bounds() {
    assert!(base().weight(0).build().unwrap().is_draining());
    assert!(base().weight(MAX_WEIGHT).build().is_ok());
    let err = base().weight(MAX_WEIGHT + 1).build().unwrap_err();
    assert_eq!(err.field(), Field::Weight);
    assert_eq!(err.value(), "1000001");
}

#[test]
fn metadata_limits() {
    let mut b = base();
    for i in 0..64 {
        b = b.metadata(format!("k{i}"), "v");
    }
    assert!(b.clone().build().is_ok());
    let err = b.metadata("one-more", "v").build().unwrap_err();
    assert_eq!(err.field(), Field::Metadata);
    assert!(err.to_string().contains("65 entries"), "{err}");

    let err = base()
        .metadata("big", "x".repeat(4094))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("4097 bytes"), "{err}");
    assert!(base().metadata("big", "x".repeat(4093)).build().is_ok());

    let err = base().metadata("bad key", "v").build().unwrap_err();
    assert!(err.to_string().contains("key bad key"), "{err}");
}

#[test]
fn long_values_are_truncated_in_errors() {
    let err = base().version("v".repeat(1000)).build().unwrap_err();
    assert!(err.value().len() < 130);
    assert!(err.value().ends_with("..."));
}

#[test]
fn serde_round_trip_validates() {
    let i = base()
        .zone("z1")
        .metadata("a", "b")
        .health(Health::Warning)
        .build()
        .unwrap();
    let json = serde_json::to_string(&i).unwrap();
    let back: Instance = serde_json::from_str(&json).unwrap();
    assert_eq!(i, back);
    let bad = json.replace("8080", "0");
    let err = serde_json::from_str::<Instance>(&bad).unwrap_err();
    assert!(err.to_string().contains("invalid port 0"), "{err}");
}

#[test]
fn parse_enums() {
    assert_eq!("grpc".parse::<Scheme>().unwrap(), Scheme::Grpc);
    assert_eq!(
        "maintenance".parse::<Health>().unwrap(),
        Health::Maintenance
    );
    let err = "zombie".parse::<Health>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid health "zombie": must be one of passing, warning, critical, maintenance"#
    );
}

#[test]
fn microservice_maps_to_instances() {
    let instances = Microservice::new("orders", "2.0.0")
        .endpoint("http://10.0.0.1:8080")
        .endpoint("https://orders.example.com")
        .endpoint("grpc://[::1]:50051")
        .metadata("team", "pay")
        .into_instances()
        .unwrap();
    assert_eq!(instances.len(), 3);
    assert_eq!(instances[0].id().as_str(), "10.0.0.1:8080");
    assert_eq!(instances[1].port(), 443);
    assert_eq!(instances[1].scheme(), Scheme::Https);
    assert_eq!(instances[2].host(), "::1");
    assert_eq!(instances[2].id().as_str(), "::1:50051");
    assert!(instances
        .iter()
        .all(|i| i.version() == "2.0.0" && i.metadata()["team"] == "pay"));

    let err = Microservice::new("orders", "1")
        .endpoint("grpc://h")
        .into_instances()
        .unwrap_err();
    assert_eq!(err.field(), Field::Endpoint);
    let err = Microservice::new("orders", "1")
        .endpoint("ftp://h:1")
        .into_instances()
        .unwrap_err();
    assert_eq!(err.value(), "ftp://h:1");
    let err = Microservice::new("orders", "1")
        .endpoint("http://h:0")
        .into_instances()
        .unwrap_err();
    assert_eq!(err.field(), Field::Port);
    assert!(Microservice::new("orders", "1").into_instances().is_err());
}

#[test]
fn a_microservice_check_is_declared_by_every_endpoint() {
    let check = Check::http("/healthz").build().unwrap();
    let instances = Microservice::new("orders", "1")
        .endpoint("http://10.0.0.1:8080")
        .endpoint("http://10.0.0.2:8080")
        .check(check.clone())
        .into_instances()
        .unwrap();
    assert!(instances.iter().all(|i| i.check() == Some(&check)));
    let plain = Microservice::new("orders", "1")
        .endpoint("http://10.0.0.1:8080")
        .into_instances()
        .unwrap();
    assert_eq!(plain[0].check(), None);
}
