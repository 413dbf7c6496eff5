fn main() -> anyhow::Result<()> {
    print!("{}", rc_operator::crd::crd_yaml()?);
    Ok(())
}
