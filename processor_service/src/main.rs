fn main() -> anyhow::Result<()> {
    service_kit::entry::run::<processor_service::cli::ProcessorService>()
}
