use yaml_rust2::parser::{Event, Parser};
#[test]
fn scratch() {
    let text = "# c\napiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n    e:\n  x: [1, {a: b}]\n---\n--- {\"a\": 1}\n...\n# only\n---\n# comment only\n---\nb: &x 2\nc: *x\n";
    let mut p = Parser::new_from_str(text);
    loop {
        let (ev, m) = p.next_token().unwrap();
        eprintln!("{:?} line={} col={} idx={}", ev, m.line(), m.col(), m.index());
        if ev == Event::StreamEnd { break; }
    }
    for doc in serde_yaml::Deserializer::from_str("a: 1\n---\nb: 2\nc: [x\n") {
        let v: Result<serde_yaml::Value, _> = serde::Deserialize::deserialize(doc);
        eprintln!("{:?}", v.map_err(|e| (e.to_string(), e.location().map(|l| (l.line(), l.column())))));
    }
    let v: serde_yaml::Value = serde_yaml::from_str("spec:\n  replicas: three\n").unwrap();
    let r: Result<k8s_openapi::api::apps::v1::Deployment, _> = serde_path_to_error::deserialize(v);
    eprintln!("{:?}", r.map_err(|e| e.to_string()));
    let r: Result<k8s_openapi::api::apps::v1::Deployment, _> = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str("spec:\n  replicas: three\n"));
    let e = r.unwrap_err();
    eprintln!("{} {:?}", e, e.inner().location().map(|l| (l.line(), l.column())));
    let v: serde_yaml::Value = serde_yaml::from_str("metadata: {labels: {}, annotations: null}\nspec:\n  selector: {}\n  template: {spec: {containers: [], volumes: []}}\n").unwrap();
    let d: k8s_openapi::api::apps::v1::Deployment = serde_yaml::from_value(v).unwrap();
    eprintln!("{}", serde_json::to_string(&d).unwrap());
    let mut p = Parser::new_from_str("a: 1\n  b: 2\n");
    loop { match p.next_token() { Ok((Event::StreamEnd, _)) => break, Ok(_) => {}, Err(e) => { eprintln!("ERR {} line={} col={}", e, e.marker().line(), e.marker().col()); break } } }
    let e = serde_yaml::from_str::<serde_yaml::Value>("a: 1\n  b: 2\n").unwrap_err();
    eprintln!("{} {:?}", e, e.location().map(|l| (l.line(), l.column())));
}
