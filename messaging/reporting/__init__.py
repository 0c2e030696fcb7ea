"""Reads for people and monitoring: the public shape of messages, the dashboard's numbers and lists,
the hourly rollup behind them, queue numbers and the Prometheus endpoint."""
