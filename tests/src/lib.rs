//! End-to-end tests of the pipeline live in `e2e/`: both services, in process, against the real
//! PostgreSQL and RabbitMQ, sharing one test's exchange and queue names.
