"""Distribution metrics of generated images."""
