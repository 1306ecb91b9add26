//! `mast-soak`: the soak and fault harness. Scenarios arrive with the fetch- and apply-side work.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("mast-soak: no scenario is implemented yet")
}
