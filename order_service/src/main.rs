fn main() -> anyhow::Result<()> {
    service_kit::entry::run::<order_service::cli::OrderService>()
}
