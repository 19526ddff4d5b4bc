"""Services: the base classes plugins extend and the livetiming-service command."""
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
