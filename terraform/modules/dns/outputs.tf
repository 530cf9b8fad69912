output "zone" {
  description = "The delegated geo-DNS zone (the topology's dns.zone)."
  value       = local.zone
}

output "name_servers" {
  description = "Name servers of the delegated zone (one per region) and their glue addresses."
  value       = local.name_servers
}

output "edge_names" {
  description = "Per-region edge names and the addresses they resolve to."
  value       = local.edge_records
}

output "control_plane_names" {
  description = "Per-region control-plane names and their addresses."
  value       = local.control_plane_records
}

output "nats_names" {
  description = "NATS server names (the topology's advertise_host) and their CNAME targets."
  value       = local.nats_records
}
