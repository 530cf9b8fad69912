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
