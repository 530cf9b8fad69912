output "nats" {
  description = "Cloud-init documents (plain text) of the region's NATS servers, in topology order: element N-1 configures server N."
  value       = local.nats
}

output "edge" {
  description = "Cloud-init document (plain text) shared by every edge node of the region."
  value       = local.edge
}

output "control_plane" {
  description = "Cloud-init document (plain text) of the region's control-plane instance."
  value       = local.control_plane
}

output "geoip_db_path" {
  description = "Path of the MaxMind City database on the control plane (the --geoip-db argument), or null when geoip_db_s3_uri is null."
  value       = var.geoip_db_s3_uri == null ? null : local.geoip_db_path
}
