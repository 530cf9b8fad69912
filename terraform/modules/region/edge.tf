################################################################################
# Edge nodes: an autoscaling group behind a network load balancer with one
# Elastic IP per AZ (the addresses geo-DNS hands out for this region)
################################################################################

resource "aws_eip" "edge" {
  count = length(local.azs)

  tags = merge(local.tags, { Name = "${local.name}-edge-${local.azs[count.index]}" })
}

resource "aws_lb" "edge" {
  name                             = "${substr(local.name, 0, 27)}-edge"
  load_balancer_type               = "network"
  enable_cross_zone_load_balancing = true

  dynamic "subnet_mapping" {
    for_each = aws_subnet.public
    content {
      subnet_id     = subnet_mapping.value.id
      allocation_id = aws_eip.edge[subnet_mapping.key].id
    }
  }

  tags = local.tags
}

resource "aws_lb_target_group" "edge" {
  name                 = "${substr(local.name, 0, 27)}-edge"
  port                 = local.client_port
  protocol             = "TCP"
  vpc_id               = aws_vpc.this.id
  target_type          = "instance"
  deregistration_delay = var.edge_deregistration_delay

  # Values every provider and API version accepts for a network load balancer.
  health_check {
    protocol            = "HTTP"
    path                = "/readyz"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 3
  }

  tags = local.tags
}

resource "aws_lb_listener" "edge" {
  load_balancer_arn = aws_lb.edge.arn
  port              = local.client_port
  # TLS is terminated here when a certificate is given; the edges then serve plain
  # HTTP on the same port.
  protocol        = var.certificate_arn == null ? "TCP" : "TLS"
  certificate_arn = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge.arn
  }
}

resource "aws_launch_template" "edge" {
  name_prefix            = "${local.name}-edge-"
  image_id               = local.ami_id
  instance_type          = var.edge_instance_type
  vpc_security_group_ids = [aws_security_group.edge.id]
  user_data              = base64gzip(module.cloud_init.edge)
  update_default_version = true

  iam_instance_profile {
    name = aws_iam_instance_profile.edge.name
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-edge", "edgemesh:role" = "edge" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "edge" {
  name_prefix               = "${local.name}-edge-"
  min_size                  = var.edge_min_size
  max_size                  = var.edge_max_size
  desired_capacity          = var.edge_desired_capacity
  vpc_zone_identifier       = aws_subnet.public[*].id
  target_group_arns         = [aws_lb_target_group.edge.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 300

  launch_template {
    id      = aws_launch_template.edge.id
    version = aws_launch_template.edge.latest_version
  }

  # A new launch template version (new topology, version or AMI) rolls the edges.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  # The node reads the edges' secrets and the CA certificate at boot.
  depends_on = [aws_ssm_parameter.secrets_edge, aws_ssm_parameter.tls_ca, aws_iam_role_policy.edge]

  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
